//! An operation a local API client asks the daemon's loop to carry out (up, down, login,
//! logout, ping, netcheck), with the channel its answer goes back on.

use pinhole_proto::ipc::{IpcError, Op};
use tokio::sync::oneshot;

/// An operation's result: a JSON value for the client, or what went wrong.
pub type Answer = Result<serde_json::Value, IpcError>;

pub struct Command {
    pub op: Op,
    pub reply: oneshot::Sender<Answer>,
}

/// An error answer.
pub fn failure(code: &str, message: impl Into<String>) -> IpcError {
    IpcError {
        code: code.to_string(),
        message: message.into(),
    }
}

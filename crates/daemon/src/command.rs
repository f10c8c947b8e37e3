//! An operation a local API client asks the daemon's loop to carry out (up, down), with the
//! channel its answer goes back on.

use pinhole_proto::ipc::{IpcError, Op};
use tokio::sync::oneshot;

pub struct Command {
    pub op: Op,
    pub reply: oneshot::Sender<Result<(), IpcError>>,
}

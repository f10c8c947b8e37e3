//! What the window and the tray show, as one value the controller publishes after every change
//! (the `view` event), and the errors commands answer with. The UI's TypeScript types are
//! generated from these (see `bindings`), so the two cannot drift apart.

use crate::settings::Settings;
use pinhole_client::LocalApiError;
use pinhole_proto::ipc::{NetcheckReport, Status};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct View {
    /// The connection to pinholed, or what is wrong with it and how to fix it.
    pub daemon: DaemonLink,
    /// pinholed's last state snapshot (none until connected to it).
    pub status: Option<Status>,
    /// What the app is doing for the person right now.
    pub action: Option<Action>,
    /// Why the last action failed, until the next one starts.
    pub error: Option<ActionError>,
    /// The last network check (the Network view), if one ran.
    pub netcheck: Option<NetcheckReport>,
    pub settings: Settings,
    /// This app's version (`0.1.0`).
    pub version: String,
}

impl View {
    pub fn new(settings: Settings) -> View {
        View {
            daemon: DaemonLink::Connecting,
            status: None,
            action: None,
            error: None,
            netcheck: None,
            settings,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Whether pinholed answers.
    pub fn ready(&self) -> bool {
        matches!(self.daemon, DaemonLink::Ready { .. })
    }
}

/// The link to pinholed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[ts(rename_all = "kebab-case", tag = "kind")]
pub enum DaemonLink {
    /// Trying to reach it.
    Connecting,
    Ready {
        /// `pinholed 0.1.0`.
        software: String,
    },
    /// Nothing listens at the socket.
    NotRunning { socket: String, fix: String },
    /// The socket's permissions or pinholed refuse this user. `joined_since_login`: the user
    /// is in the group pinhole now (the installer added them), which takes effect at the next
    /// login.
    NotAllowed {
        detail: String,
        fix: String,
        joined_since_login: bool,
    },
    /// pinholed speaks another version of the local API.
    WrongVersion { message: String, fix: String },
    /// Anything else (a broken socket, an unreadable answer).
    Unreachable { message: String },
}

impl DaemonLink {
    /// The problem behind a failed connection, in words, with the command that fixes it.
    pub fn from_error(e: &LocalApiError, socket: &str) -> DaemonLink {
        match e {
            LocalApiError::NotRunning { .. } => DaemonLink::NotRunning {
                socket: socket.to_string(),
                fix: fix_not_running().to_string(),
            },
            LocalApiError::NotAllowed { detail } => {
                #[cfg(unix)]
                let joined_since_login = crate::group::joined_since_login();
                #[cfg(not(unix))]
                let joined_since_login = false;
                DaemonLink::NotAllowed {
                    detail: detail.clone(),
                    fix: if joined_since_login {
                        "Sign out of your desktop and in again (in a terminal until then: newgrp pinhole)"
                    } else {
                        fix_not_allowed()
                    }
                    .to_string(),
                    joined_since_login,
                }
            }
            LocalApiError::WrongVersion { message } => DaemonLink::WrongVersion {
                message: message.clone(),
                fix: "Install the same release of the app and the Pinhole service (pinholed)."
                    .to_string(),
            },
            other => DaemonLink::Unreachable {
                message: other.to_string(),
            },
        }
    }
}

fn fix_not_running() -> &'static str {
    if cfg!(windows) {
        "Start-Service pinholed   (in PowerShell as administrator)"
    } else if cfg!(target_os = "macos") {
        "sudo launchctl kickstart system/dev.pinhole.pinholed"
    } else {
        "sudo systemctl enable --now pinholed"
    }
}

fn fix_not_allowed() -> &'static str {
    if cfg!(windows) {
        "Sign in to Windows as the user who runs the app; pinholed serves local interactive users only."
    } else if cfg!(target_os = "macos") {
        "sudo dseditgroup -o edit -a $USER -t user pinhole   (then sign out and in again)"
    } else {
        "sudo usermod -aG pinhole $USER   (then sign out of your desktop and in again)"
    }
}

/// An action under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename_all = "kebab-case")]
pub enum Action {
    SigningIn,
    Connecting,
    Disconnecting,
    SigningOut,
}

/// A failed command: a stable code when pinholed gave one, and a sentence for the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub code: Option<String>,
    pub message: String,
}

impl ActionError {
    pub fn new(message: impl Into<String>) -> ActionError {
        ActionError {
            code: None,
            message: message.into(),
        }
    }
}

impl From<LocalApiError> for ActionError {
    fn from(e: LocalApiError) -> Self {
        let code = e.code().map(str::to_string);
        let message = match &e {
            // pinholed's sentence alone reads better than with its code appended.
            LocalApiError::Daemon { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ActionError { code, message }
    }
}

/// Something the shell does for the controller (outside the window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open the server's sign-in page in the browser.
    OpenUrl(String),
    /// A desktop notification.
    Notify { title: String, body: String },
    /// Register or unregister the app to start at login.
    StartAtLogin(bool),
}

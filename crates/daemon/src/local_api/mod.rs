//! The local API: the IPC server the app and the CLI talk to (`ipc_server`), the operations it
//! hands the loop (`command`), the status it reports and the headline a person sees first
//! (`status`, `headline`), and what the user asked for that outlives a restart (`prefs`).

pub mod command;
pub mod headline;
pub mod ipc_server;
pub mod prefs;
pub mod status;

//! What a program needs to drive pinholed on this machine: the local API client (`local_api`:
//! a Unix socket, a named pipe on Windows; hello, requests, the state subscription) and the
//! person's sign-in in the OS credential store (`credentials`). Shared by the `pinhole` CLI and
//! the desktop app, so both say the same things when something is wrong.

pub mod credentials;
pub mod local_api;

pub use credentials::CredentialError;
pub use local_api::{LocalApi, LocalApiError};

//! The app's log: to standard error (filtered by `PINHOLE_LOG`, default `info`) and into the
//! in-memory ring of its last lines (`pinhole-logring`) that the diagnostics bundle includes.

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PINHOLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| pinhole_logring::Tee)
        .try_init();
}

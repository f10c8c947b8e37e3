//! The diagnostics bundle a person can send to whoever helps them: one JSON file with the app's
//! view (pinholed's status, the last network check, the settings), a fresh network check, and
//! pinholed's and the app's recent logs. Written to the Downloads folder (`PINHOLE_APP_EXPORT_DIR` instead).

use crate::view::{ActionError, View};
use pinhole_proto::ipc::Op;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn export_dir() -> PathBuf {
    std::env::var_os("PINHOLE_APP_EXPORT_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            directories::UserDirs::new().map(|u| {
                u.download_dir()
                    .unwrap_or_else(|| u.home_dir())
                    .to_path_buf()
            })
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// pinholed's answer to `op`, or what went wrong, as JSON; at most 10 s.
async fn answer(socket: &Path, op: Op) -> serde_json::Value {
    let request = crate::controller::request::<serde_json::Value>(socket, op);
    match tokio::time::timeout(Duration::from_secs(10), request).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => json!({ "error": e.message }),
        Err(_) => json!({ "error": "no answer within 10 s" }),
    }
}

/// Builds the bundle's JSON.
pub async fn bundle(view: &View, socket: &Path) -> serde_json::Value {
    // A fresh check: the network may have changed since the last one.
    let netcheck = answer(socket, Op::Netcheck).await;
    // pinholed's own recent log.
    let daemon_log = answer(socket, Op::Logs { lines: None }).await;
    json!({
        "created": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "app": { "version": view.version, "os": std::env::consts::OS, "arch": std::env::consts::ARCH },
        "daemon": view.daemon,
        "status": view.status,
        "netcheck": netcheck,
        "last_netcheck": view.netcheck,
        "settings": view.settings,
        "daemon_log": daemon_log.get("lines").cloned().unwrap_or(daemon_log),
        "app_log": pinhole_logring::recent(pinhole_logring::LINES),
    })
}

/// Writes the bundle and returns its path.
pub async fn export(view: &View, socket: &Path) -> Result<PathBuf, ActionError> {
    let value = bundle(view, socket).await;
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let dir = export_dir();
    let path = dir.join(format!("pinhole-diagnostics-{stamp}.json"));
    let text = serde_json::to_vec_pretty(&value).unwrap_or_default();
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| ActionError::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

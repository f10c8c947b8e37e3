//! The daemon's state directory: created if missing, private to the daemon's user.

use anyhow::{Context, Result};
use std::path::Path;

/// Creates `dir` (and parents) and restricts it to its owner (0700 on Unix).
pub fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict state directory {}", dir.display()))?;
    }
    Ok(())
}

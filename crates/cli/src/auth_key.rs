//! Where `pinhole login` takes an auth key from: a file (`--authkey-file`), standard input
//! (`--authkey -`), or the command line itself, which works but warns, since any user on the
//! machine can read a process's command line (`ps`, `/proc/*/cmdline`).

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::Path;

/// What the person wrote on the command line.
pub enum Source<'a> {
    /// `--authkey KEY` (or `-` for standard input).
    Arg(&'a str),
    /// `--authkey-file FILE`.
    File(&'a Path),
}

/// The warning for a key given on the command line.
pub const ARG_WARNING: &str = "pinhole: warning: an auth key on the command line can be read by every user of this machine (ps, /proc/*/cmdline); use --authkey-file FILE or --authkey - (standard input)";

/// The auth key from its source; `stdin` is read for `-`. The first line, trimmed.
pub fn read(source: Source<'_>, stdin: impl BufRead) -> Result<String> {
    let (text, from) = match source {
        Source::Arg("-") => {
            let mut line = String::new();
            stdin
                .take(4096)
                .read_line(&mut line)
                .context("cannot read the auth key from standard input")?;
            (line, "standard input".to_string())
        }
        Source::Arg(key) => {
            eprintln!("{ARG_WARNING}");
            (key.to_string(), "--authkey".to_string())
        }
        Source::File(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the auth key file {}", path.display()))?,
            path.display().to_string(),
        ),
    };
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        bail!("no auth key in {from}");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_stdin_a_file_or_the_argument() {
        let stdin = std::io::Cursor::new(b"phk_from_stdin\nmore\n".to_vec());
        assert_eq!(read(Source::Arg("-"), stdin).unwrap(), "phk_from_stdin");
        let file = std::env::temp_dir().join(format!("pinhole-authkey-{}", std::process::id()));
        std::fs::write(&file, "  phk_from_file  \n").unwrap();
        let none = std::io::Cursor::new(Vec::new());
        assert_eq!(
            read(Source::File(&file), none.clone()).unwrap(),
            "phk_from_file"
        );
        assert_eq!(
            read(Source::Arg("phk_inline"), none.clone()).unwrap(),
            "phk_inline"
        );
        // Empty input and a missing file are clear errors.
        std::fs::write(&file, "\n").unwrap();
        let e = read(Source::File(&file), none.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no auth key in"), "{e}");
        assert!(read(Source::Arg("-"), none.clone())
            .unwrap_err()
            .to_string()
            .contains("standard input"));
        let _ = std::fs::remove_file(&file);
        let e = read(Source::File(&file), none).unwrap_err().to_string();
        assert!(e.contains("cannot read the auth key file"), "{e}");
    }
}

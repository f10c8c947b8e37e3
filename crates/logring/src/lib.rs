//! The last lines of a process's log, kept in memory so that a diagnostics bundle can include
//! them: a writer for `tracing_subscriber::fmt().with_writer(…)` that copies every record to
//! standard error and into a ring of the last `LINES` lines. pinholed serves its ring over the
//! local API (`logs`); the app puts both in its diagnostics export.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// How many lines the ring keeps.
pub const LINES: usize = 1000;

static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();

fn ring() -> &'static Mutex<VecDeque<String>> {
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(LINES)))
}

/// Keeps `text` (one or more lines) in the ring, dropping the oldest beyond `LINES`.
pub fn push(text: &str) {
    let mut r = ring().lock().unwrap_or_else(|p| p.into_inner());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if r.len() == LINES {
            r.pop_front();
        }
        r.push_back(line.to_string());
    }
}

/// The last `n` lines (all kept, if fewer), oldest first.
pub fn recent(n: usize) -> Vec<String> {
    let r = ring().lock().unwrap_or_else(|p| p.into_inner());
    r.iter().skip(r.len().saturating_sub(n)).cloned().collect()
}

/// A writer that copies what it is given to standard error and into the ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // All of it or an error: a partial write would be offered again and kept twice.
        push(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A writer that copies what it is given into a file and into the ring: the log of a process
/// with no standard error to read (a Windows service).
#[derive(Debug, Clone)]
pub struct FileTee(std::sync::Arc<Mutex<std::fs::File>>);

impl FileTee {
    pub fn new(file: std::fs::File) -> Self {
        FileTee(std::sync::Arc::new(Mutex::new(file)))
    }
}

impl Write for FileTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        push(&String::from_utf8_lossy(buf));
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring is the process's: tests that read it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_file_tee_writes_the_file_and_the_ring() {
        let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let path = std::env::temp_dir().join(format!("pinhole-logring-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut tee = FileTee::new(file);
        let mut twin = tee.clone();
        tee.write_all(b"first line of the file tee\n").unwrap();
        twin.write_all(b"second line of the file tee\n").unwrap();
        twin.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "first line of the file tee\nsecond line of the file tee\n"
        );
        assert!(recent(LINES).contains(&"second line of the file tee".to_string()));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_ring_keeps_the_last_lines_in_order() {
        let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        for n in 0..(LINES + 5) {
            push(&format!("line {n}\n\n"));
        }
        let all = recent(LINES * 2);
        assert_eq!(all.len(), LINES);
        assert_eq!(all.first().map(String::as_str), Some("line 5"));
        let last = format!("line {}", LINES + 4);
        assert_eq!(all.last(), Some(&last));
        assert_eq!(recent(2), vec![format!("line {}", LINES + 3), last]);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines_in_order() {
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

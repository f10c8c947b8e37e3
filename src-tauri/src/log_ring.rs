//! The app's log: to standard error (filtered by `PINHOLE_LOG`, default `info`) and into a ring
//! of its last lines, which the diagnostics bundle includes.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// How many lines the ring keeps.
const LINES: usize = 1000;

static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();

fn ring() -> &'static Mutex<VecDeque<String>> {
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(LINES)))
}

/// Keeps `text` (one or more lines) in the ring, dropping the oldest beyond `LINES`.
pub fn push(text: &str) {
    let mut r = ring().lock().unwrap_or_else(|p| p.into_inner());
    for line in text.lines().filter(|l| !l.is_empty()) {
        if r.len() == LINES {
            r.pop_front();
        }
        r.push_back(line.to_string());
    }
}

/// The last lines, oldest first.
pub fn recent() -> Vec<String> {
    let r = ring().lock().unwrap_or_else(|p| p.into_inner());
    r.iter().cloned().collect()
}

/// A writer that copies each log record to standard error and the ring.
struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        push(&String::from_utf8_lossy(buf));
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PINHOLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| Tee)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ring_keeps_the_last_lines_in_order() {
        for n in 0..(super::LINES + 5) {
            super::push(&format!("line {n}\n"));
        }
        let r = super::recent();
        assert_eq!(r.len(), super::LINES);
        assert_eq!(r.first().map(String::as_str), Some("line 5"));
        assert_eq!(
            r.last().map(String::as_str),
            Some(format!("line {}", super::LINES + 4).as_str())
        );
    }
}

//! Failed attempts counted per key (a user name, a client address) in fixed windows; a key over
//! its limit is refused until its window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before old windows are swept (bounds memory under a spray of keys).
const SWEEP_AT: usize = 10_000;

pub struct Limiter {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Limiter {
            max,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Err(wait) if `key` has used up its failures for this window.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get(key) {
            Some(&(start, n)) if n >= self.max && now < start + self.window => {
                Err(start + self.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure for `key`.
    pub fn fail(&self, key: &str, now: Instant) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= SWEEP_AT {
            let window = self.window;
            counts.retain(|_, (start, _)| now < *start + window);
        }
        let e = counts.entry(key.to_string()).or_insert((now, 0));
        if now >= e.0 + self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Forgets `key` (after a success).
    pub fn clear(&self, key: &str) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_failures_until_the_window_ends() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check("u", t).is_ok());
            l.fail("u", t);
        }
        let wait = l.check("u", t + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check("other", t).is_ok());
        assert!(l.check("u", t + Duration::from_secs(61)).is_ok());
        l.fail("u", t + Duration::from_secs(61));
        assert!(l.check("u", t + Duration::from_secs(61)).is_ok());
        l.clear("u");
    }
}

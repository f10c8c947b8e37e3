//! Connection attempts counted per client address in fixed windows, with a bounded table: an
//! address over its limit is refused until its window ends, and a spray of addresses cannot
//! grow the table past [`MAX_ADDRESSES`] (the oldest windows go first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
pub const MAX_ADDRESSES: usize = 16_384;

pub struct Attempts {
    max: u32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Attempts {
    pub fn new(max: u32, window: Duration) -> Self {
        Attempts {
            max: max.max(1),
            window,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `ip`; `Err(wait)` when it is over the limit for this window.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_ADDRESSES && !t.contains_key(&ip) {
            let window = self.window;
            t.retain(|_, (start, _)| now < *start + window);
            if t.len() >= MAX_ADDRESSES {
                // Still full of live windows: forget the older half.
                let mut starts: Vec<Instant> = t.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                t.retain(|_, (start, _)| *start > cut);
            }
        }
        let e = t.entry(ip).or_insert((now, 0));
        if now >= e.0 + self.window {
            *e = (now, 0);
        }
        if e.1 >= self.max {
            return Err(e.0 + self.window - now);
        }
        e.1 += 1;
        Ok(())
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_address_and_stays_bounded() {
        let a = Attempts::new(3, Duration::from_secs(10));
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(a.attempt(ip, t).is_ok());
        }
        assert_eq!(
            a.attempt(ip, t + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert!(
            a.attempt("192.0.2.2".parse().unwrap(), t).is_ok(),
            "others are not affected"
        );
        assert!(
            a.attempt(ip, t + Duration::from_secs(10)).is_ok(),
            "a new window"
        );
        for i in 0..(MAX_ADDRESSES as u32 * 2) {
            let _ = a.attempt(
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i)),
                t,
            );
            assert!(a.len() <= MAX_ADDRESSES);
        }
    }
}

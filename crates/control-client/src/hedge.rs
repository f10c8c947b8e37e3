//! Hedged requests: a request still unanswered after a while is sent again, on another
//! connection, and the first answer wins. A lost TCP SYN is retransmitted only after a whole
//! second (then two, then four), so on a lossy network one unlucky connection would hold up a
//! sign-in, a map stream or an endpoint update for seconds; the copy goes out well before that.
//! Only requests that may safely arrive twice are hedged (the server does the same thing twice
//! or refuses the second), and never more than one copy.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The copy never goes out sooner than this (a new TLS connection over a long path takes a few
/// round trips; a copy sent sooner would be waste)…
pub const HEDGE_MIN: Duration = Duration::from_millis(500);
/// …nor later than this (a slow server is not made slower by copies of everything).
pub const HEDGE_MAX: Duration = Duration::from_secs(5);

/// The fastest answer this client has had, which says how long an answer takes when nothing
/// is lost; a copy goes out after three times that (within the bounds above).
#[derive(Debug)]
pub struct Latency {
    fastest_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            fastest_us: AtomicU64::new(u64::MAX),
        }
    }
}

impl Latency {
    /// Notes how long an answer took.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fastest_us.fetch_min(us, Ordering::Relaxed);
    }

    /// How long to wait before sending a copy.
    pub fn hedge_after(&self) -> Duration {
        match self.fastest_us.load(Ordering::Relaxed) {
            u64::MAX => HEDGE_MIN,
            us => (Duration::from_micros(us) * 3).clamp(HEDGE_MIN, HEDGE_MAX),
        }
    }
}

/// Runs `first`; if it has not finished after `after`, starts `second()` as well. The first
/// success wins (the other is dropped, which closes its connection); when one fails, the other
/// is still waited for; when both fail, the first's error is returned (the copy's is usually
/// "already done" by then). `second` is not called when `first` finishes in time.
pub async fn race<T, E, F1, F2>(
    first: F1,
    after: Duration,
    second: impl FnOnce() -> F2,
) -> Result<T, E>
where
    F1: Future<Output = Result<T, E>>,
    F2: Future<Output = Result<T, E>>,
{
    tokio::pin!(first);
    tokio::select! {
        r = &mut first => return r,
        _ = tokio::time::sleep(after) => {}
    }
    tracing::debug!(
        "no answer after {:.1} s: sending a copy on another connection",
        after.as_secs_f64()
    );
    let second = second();
    tokio::pin!(second);
    tokio::select! {
        r = &mut first => match r {
            Ok(v) => Ok(v),
            Err(e) => second.await.map_err(|_| e),
        },
        r = &mut second => match r {
            Ok(v) => Ok(v),
            Err(_) => first.await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    async fn after<T>(d: Duration, v: T) -> T {
        tokio::time::sleep(d).await;
        v
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_sends_no_copy() {
        let copies = Arc::new(AtomicUsize::new(0));
        let c = copies.clone();
        let r: Result<u8, ()> = race(after(ms(100), Ok(1)), ms(500), || {
            c.fetch_add(1, Ordering::Relaxed);
            after(ms(0), Ok(2))
        })
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(copies.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_first_is_overtaken_by_the_copy() {
        let t0 = tokio::time::Instant::now();
        // The first waits for its SYN to be sent again (1 s) and answers at 1.2 s.
        let r: Result<u8, ()> =
            race(after(ms(1200), Ok(1)), ms(500), || after(ms(200), Ok(2))).await;
        assert_eq!(r, Ok(2));
        assert_eq!(t0.elapsed(), ms(700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_waits_for_the_other() {
        // The copy is refused (the first used a one-off key), the first succeeds later.
        let r: Result<u8, &str> = race(after(ms(1500), Ok(1)), ms(500), || {
            after(ms(100), Err("used already"))
        })
        .await;
        assert_eq!(r, Ok(1));
        // The first fails after the copy went out; the copy succeeds.
        let r: Result<u8, &str> = race(after(ms(700), Err("reset")), ms(500), || {
            after(ms(600), Ok(2))
        })
        .await;
        assert_eq!(r, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn both_failing_give_the_first_error() {
        let r: Result<u8, &str> = race(after(ms(900), Err("first")), ms(500), || {
            after(ms(100), Err("copy"))
        })
        .await;
        assert_eq!(r, Err("first"));
        // A failure before the copy is due is returned at once, without a copy.
        let r: Result<u8, &str> = race(after(ms(10), Err("refused")), ms(500), || {
            after(ms(0), Ok(2))
        })
        .await;
        assert_eq!(r, Err("refused"));
    }

    #[test]
    fn the_copy_waits_three_fastest_answers_within_bounds() {
        let l = Latency::default();
        assert_eq!(l.hedge_after(), HEDGE_MIN);
        l.observe(ms(300));
        assert_eq!(l.hedge_after(), ms(900));
        l.observe(ms(2));
        assert_eq!(l.hedge_after(), HEDGE_MIN);
        let slow = Latency::default();
        slow.observe(Duration::from_secs(4));
        assert_eq!(slow.hedge_after(), HEDGE_MAX);
    }
}

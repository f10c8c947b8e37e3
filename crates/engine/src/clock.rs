//! Keeps the WireGuard crate's notion of time equal to the `now` the caller passes in.
//!
//! boringtun reads its clock inside its state machine. With the `sim-clock` feature it reads the
//! thread-local `mock_instant` clock instead, which this module sets before every call, so a
//! simulated network advances WireGuard's timers in step with its own clock. Without the feature
//! boringtun reads the real monotonic clock, which is what the daemon passes as `now` anyway.

use std::time::Instant;

/// The engine's origin of time for the simulated clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    #[cfg_attr(not(feature = "sim-clock"), allow(dead_code))]
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new(epoch: Instant) -> Self {
        Clock { epoch }
    }

    /// Sets WireGuard's clock to `now` (a no-op on the real clock).
    #[inline]
    pub(crate) fn sync(&self, now: Instant) {
        #[cfg(feature = "sim-clock")]
        mock_instant::MockClock::set_time(now.saturating_duration_since(self.epoch));
        #[cfg(not(feature = "sim-clock"))]
        let _ = now;
    }
}

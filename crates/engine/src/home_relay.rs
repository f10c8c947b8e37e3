//! Which relay region is this node's home: the one peers reach it through. Chosen by netcheck's
//! latencies with hysteresis (as Tailscale does): the current home stays unless another region
//! is at least 10 ms faster and under two thirds of the current one's latency, so that a node
//! does not flap between two similar regions and make every peer follow.

use std::time::Duration;

/// Smallest gain that justifies moving home.
pub const MIN_GAIN: Duration = Duration::from_millis(10);

/// The home region after a netcheck. `latencies` are the regions that answered; `regions`
/// every region of the relay map in its order (the first is the fallback when none answered).
pub fn choose_home(
    current: Option<&str>,
    latencies: &[(String, Duration)],
    regions: &[String],
) -> Option<String> {
    let current = current.filter(|c| regions.iter().any(|r| r == c));
    let Some((best, best_latency)) = latencies.iter().min_by_key(|(_, l)| *l) else {
        // Nothing answered (UDP blocked?): keep what we have, else the first region.
        return current
            .map(str::to_string)
            .or_else(|| regions.first().cloned());
    };
    let Some(current) = current else {
        return Some(best.clone());
    };
    let Some((_, current_latency)) = latencies.iter().find(|(c, _)| c == current) else {
        // The current home did not answer this time but others did: move.
        return Some(best.clone());
    };
    let gain = current_latency.saturating_sub(*best_latency);
    if best != current && gain >= MIN_GAIN && *best_latency * 3 < *current_latency * 2 {
        Some(best.clone())
    } else {
        Some(current.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn regions() -> Vec<String> {
        vec!["fra".into(), "nyc".into(), "sfo".into()]
    }

    fn lat(v: &[(&str, u64)]) -> Vec<(String, Duration)> {
        v.iter().map(|(r, l)| (r.to_string(), ms(*l))).collect()
    }

    #[test]
    fn the_first_choice_is_the_fastest_region() {
        let l = lat(&[("fra", 40), ("nyc", 12), ("sfo", 90)]);
        assert_eq!(choose_home(None, &l, &regions()).as_deref(), Some("nyc"));
    }

    #[test]
    fn small_or_relative_small_gains_do_not_move_home() {
        // 8 ms better: below the 10 ms minimum.
        let l = lat(&[("fra", 30), ("nyc", 22)]);
        assert_eq!(
            choose_home(Some("fra"), &l, &regions()).as_deref(),
            Some("fra")
        );
        // 20 ms better but not under 2/3 of 100 ms.
        let l = lat(&[("fra", 100), ("nyc", 80)]);
        assert_eq!(
            choose_home(Some("fra"), &l, &regions()).as_deref(),
            Some("fra")
        );
        // 40 ms better and 60 < 66.7: move.
        let l = lat(&[("fra", 100), ("nyc", 60)]);
        assert_eq!(
            choose_home(Some("fra"), &l, &regions()).as_deref(),
            Some("nyc")
        );
    }

    #[test]
    fn a_silent_or_vanished_home_is_left() {
        let l = lat(&[("nyc", 50)]);
        assert_eq!(
            choose_home(Some("fra"), &l, &regions()).as_deref(),
            Some("nyc")
        );
        let l = lat(&[("fra", 50)]);
        assert_eq!(
            choose_home(Some("gone"), &l, &regions()).as_deref(),
            Some("fra"),
            "a region no longer in the map is not kept"
        );
    }

    #[test]
    fn without_answers_home_stays_or_falls_back_to_the_first_region() {
        assert_eq!(
            choose_home(Some("nyc"), &[], &regions()).as_deref(),
            Some("nyc")
        );
        assert_eq!(choose_home(None, &[], &regions()).as_deref(), Some("fra"));
        assert_eq!(choose_home(None, &[], &[]), None);
    }
}

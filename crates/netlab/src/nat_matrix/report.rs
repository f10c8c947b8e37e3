//! The grid of expected against observed paths, as Markdown and a one-line summary, and the
//! cases the test suite and the full grid run.

use super::*;

/// The results as a Markdown table, with the count of each verdict.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| case | expected | observed | verdict | to ping (s) | to path (s) | hold: path changes, pings answered | a's endpoint or relay | RTT (ms) | a's reason |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let secs = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
        let via = match (o.a.connection.as_str(), &o.a.endpoint, &o.a.relay) {
            ("relayed", _, Some(r)) => format!("relay {r}"),
            (_, Some(e), _) => e.clone(),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} in {} s, {}/{} pings answered | {} | {} | {} |\n",
            o.case,
            o.expected,
            o.observed.map_or("none".into(), |p| p.to_string()),
            o.verdict,
            secs(o.seconds_to_ping),
            secs(o.seconds_to_path),
            o.flaps,
            o.held_for.as_secs(),
            o.hold_answered,
            o.hold_pings,
            via,
            o.a.rtt_ms.map_or("–".into(), |r| format!("{r:.1}")),
            o.a.reason.as_deref().unwrap_or("–").replace('|', "/"),
        ));
    }
    s.push('\n');
    s.push_str(&summary(outcomes));
    s
}

/// A grid of `profiles` × `profiles`: in each cell the path observed (D direct, R relayed,
/// – none) and how it compares (✓ as expected, ✗ worse than expected, + beyond expectation).
pub fn grid_markdown(profiles: &[Profile], outcomes: &[Outcome]) -> String {
    let names: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    let mut s = format!("| | {} |\n|---|", names.join(" | "));
    s.push_str(&"---|".repeat(names.len()));
    s.push('\n');
    for a in &names {
        s.push_str(&format!("| **{a}** |"));
        for b in &names {
            let cell = outcomes
                .iter()
                .find(|o| {
                    o.pair
                        .as_ref()
                        .is_some_and(|(x, y)| (x == a && y == b) || (x == b && y == a))
                })
                .map_or("".to_string(), |o| {
                    let path = match o.observed {
                        Some(Path::Direct) => "D",
                        Some(Path::Relayed) => "R",
                        None => "–",
                    };
                    let mark = match o.verdict {
                        Verdict::DirectAsExpected | Verdict::RelayedAsExpected => "✓",
                        Verdict::DirectBeyondExpectation => "+",
                        Verdict::WorseThanExpected | Verdict::NoConnectivity => "✗",
                    };
                    format!("{path} {mark}")
                });
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

/// "N direct as expected, N relayed as expected, …".
pub fn summary(outcomes: &[Outcome]) -> String {
    let all = [
        Verdict::DirectAsExpected,
        Verdict::RelayedAsExpected,
        Verdict::DirectBeyondExpectation,
        Verdict::WorseThanExpected,
        Verdict::NoConnectivity,
    ];
    all.iter()
        .map(|v| {
            let n = outcomes.iter().filter(|o| o.verdict == *v).count();
            format!("{n} {v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cases `cargo xtask test` runs: the classic four pairwise, hairpin, double NAT, one
/// side public, UDP blocked.
pub fn test_cases() -> Vec<Case> {
    let mut v = grid(&Profile::classic());
    let p = |s: &str| s.parse::<Profile>().unwrap_or_else(|e| panic!("{e}"));
    v.push(Case::SameRouter(p("port-restricted-cone+hairpin")));
    v.push(Case::DoubleNat(
        p("eim-adf"),
        p("port-restricted-cone"),
        p("full-cone"),
    ));
    v.push(Case::Pair(p("public"), p("symmetric")));
    v.push(Case::Pair(p("udp-blocked"), p("port-restricted-cone")));
    v
}

/// Every ordered-independent pair of `profiles` (a × b and b × a are one cell).
pub fn grid(profiles: &[Profile]) -> Vec<Case> {
    let mut v = Vec::new();
    for (i, a) in profiles.iter().enumerate() {
        for b in &profiles[i..] {
            v.push(Case::Pair(a.clone(), b.clone()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_square_grid_shows_each_pair_once_both_ways() {
        let ps: Vec<Profile> = ["eim-eif", "adpm-adpf"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let outcome = |a: &str, b: &str, observed, verdict| Outcome {
            case: format!("{a} × {b}"),
            pair: Some((a.into(), b.into())),
            expected: Path::Direct,
            observed,
            verdict,
            seconds_to_ping: Some(0.1),
            seconds_to_path: Some(0.2),
            flaps: 0,
            held_for: Duration::from_secs(30),
            hold_pings: 60,
            hold_answered: 60,
            a: Seen::default(),
            b: Seen::default(),
        };
        let outcomes = [
            outcome(
                "eim-eif",
                "eim-eif",
                Some(Path::Direct),
                Verdict::DirectAsExpected,
            ),
            outcome(
                "eim-eif",
                "adpm-adpf",
                Some(Path::Relayed),
                Verdict::WorseThanExpected,
            ),
            outcome("adpm-adpf", "adpm-adpf", None, Verdict::NoConnectivity),
        ];
        let g = grid_markdown(&ps, &outcomes);
        let rows: Vec<&str> = g.lines().collect();
        assert_eq!(rows[0], "| | eim-eif | adpm-adpf |");
        assert_eq!(rows[2], "| **eim-eif** | D ✓ | R ✗ |");
        assert_eq!(rows[3], "| **adpm-adpf** | R ✗ | – ✗ |");
        assert_eq!(grid(&Profile::all_nine()).len(), 45);
    }
}

//! Durations on the command line: `90s`, `15m`, `12h`, `30d`, or `never`.

use std::time::Duration;

/// Parses `N` followed by `s`, `m`, `h` or `d`; `never` (or `0`) is none.
pub fn parse(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if t == "never" || t == "0" {
        return Ok(None);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 90s, 15m, 12h, 30d or never"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} has no unit: use s, m, h or d (e.g. 30d)")),
    };
    n.checked_mul(secs)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_never() {
        assert_eq!(parse("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("2d"), Ok(Some(Duration::from_secs(172_800))));
        assert_eq!(parse("never"), Ok(None));
        assert!(parse("12").unwrap_err().contains("no unit"));
        assert!(parse("x1h").is_err());
    }
}

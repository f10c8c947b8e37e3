//! Node names as DNS labels: what a hostname becomes in the map (lower-case letters, digits
//! and hyphens, at most 63 bytes, RFC 1035's LDH rule) and the `-2`, `-3`… that make a name
//! unique within an account without growing past a label's length.

/// The longest label DNS allows (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// What a hostname that leaves nothing usable becomes.
const FALLBACK: &str = "node";

/// A valid DNS label for a hostname: only its first label if it is a domain name
/// (`laptop.example.com` → `laptop`), ASCII letters lower-cased, digits kept, every run of
/// anything else (spaces, punctuation, non-ASCII) one hyphen, none at either end, at most 63
/// bytes; `node` when nothing is left.
pub fn label(hostname: &str) -> String {
    let hostname = hostname.trim();
    let first = match hostname.split_once('.') {
        Some((first, rest)) if !rest.is_empty() && !first.trim().is_empty() => first,
        _ => hostname,
    };
    let mut out = String::with_capacity(first.len().min(MAX_LABEL));
    for c in first.chars() {
        if out.len() >= MAX_LABEL {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        FALLBACK.to_string()
    } else {
        out.to_string()
    }
}

/// The `n`th candidate for a name whose label is `base`: `base` itself for 1, else `base-n`
/// with `base` shortened so the whole stays a valid label.
pub fn numbered(base: &str, n: u32) -> String {
    if n <= 1 {
        return base.to_string();
    }
    let tail = format!("-{n}");
    let keep = MAX_LABEL.saturating_sub(tail.len()).min(base.len());
    // A label is ASCII, so any byte index is a character boundary.
    let head = base.get(..keep).unwrap_or(base).trim_end_matches('-');
    format!("{head}{tail}")
}

/// Whether `s` is already a label this module would produce: 1–63 bytes of lower-case
/// letters, digits and inner hyphens.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn hostnames_become_labels() {
        assert_eq!(label("Laptop"), "laptop");
        assert_eq!(label("Jane's MacBook Pro"), "jane-s-macbook-pro");
        assert_eq!(label("  my   laptop  "), "my-laptop");
        assert_eq!(label("laptop.example.com"), "laptop");
        assert_eq!(label("laptop."), "laptop");
        assert_eq!(label("Jörg-PC"), "j-rg-pc");
        assert_eq!(label("日本語"), "node");
        assert_eq!(label(""), "node");
        assert_eq!(label("---"), "node");
        assert_eq!(label(".hidden"), "hidden");
        assert_eq!(label(&"a".repeat(100)), "a".repeat(63));
    }

    #[test]
    fn numbered_names_stay_labels() {
        assert_eq!(numbered("laptop", 1), "laptop");
        assert_eq!(numbered("laptop", 2), "laptop-2");
        let long = "a".repeat(63);
        assert_eq!(numbered(&long, 12), format!("{}-12", "a".repeat(60)));
        // A cut that ends on a hyphen does not leave two in a row.
        let hyphen = format!("{}-b", "a".repeat(60));
        assert_eq!(numbered(&hyphen, 2), format!("{}-2", "a".repeat(60)));
    }

    #[test]
    fn validity_follows_ldh() {
        assert!(is_valid("nas"));
        assert!(is_valid("nas-2"));
        assert!(!is_valid("Nas"));
        assert!(!is_valid("-nas"));
        assert!(!is_valid("nas-"));
        assert!(!is_valid("n_as"));
        assert!(!is_valid(""));
        assert!(!is_valid(&"a".repeat(64)));
    }

    proptest! {
        /// Any hostname at all becomes a valid label, and numbering as control does (the
        /// first free of base, base-2, base-3…) gives every one of a batch a distinct label.
        #[test]
        fn random_hostnames_become_valid_unique_labels(hosts in proptest::collection::vec(any::<String>(), 1..40)) {
            let mut taken = HashSet::new();
            for h in &hosts {
                let base = label(h);
                prop_assert!(is_valid(&base), "{h:?} became {base:?}");
                let mut n = 1;
                let mut name = numbered(&base, n);
                while taken.contains(&name) {
                    n += 1;
                    name = numbered(&base, n);
                }
                prop_assert!(is_valid(&name), "{h:?} numbered {n} became {name:?}");
                prop_assert!(taken.insert(name));
            }
        }
    }
}

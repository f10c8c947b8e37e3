//! Who a verified ID token says a person is, as Pinhole needs it: the provider's subject, a
//! verified email (the user's name here), the account they belong to (the email's domain, or a
//! claim the operator names) and the groups the provider puts them in. Pure: the claims come in
//! as JSON whose signature was checked already; every refusal says what is wrong in words.

use serde_json::{Map, Value};

/// The operator's rules for mapping claims to users and accounts.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// A claim whose value names the account (e.g. `org`); none: the email's domain does.
    pub account_claim: Option<String>,
    /// Email domains that may sign in; empty: any the provider vouches for.
    pub allowed_domains: Vec<String>,
}

/// A person as the provider vouches for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// The verified email, lower-case: the user's name in Pinhole and in policies.
    pub email: String,
    pub account: String,
    /// The `groups` claim's names (policy group `group:NAME` gains this user).
    pub groups: Vec<String>,
}

/// Longest user or account name Pinhole keeps.
const MAX_NAME: usize = 64;
/// At most this many groups are taken from one token, each at most [`MAX_GROUP`] bytes.
const MAX_GROUPS: usize = 256;
const MAX_GROUP: usize = 128;

/// Why a sign-in is refused, in words for the person at the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(s: impl Into<String>) -> Refused {
    Refused(s.into())
}

/// Whether a claim says true (a JSON `true`, or the string `"true"` some providers send).
fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Reads the identity out of verified claims.
pub fn identity(claims: &Map<String, Value>, mapping: &Mapping) -> Result<Identity, Refused> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refused("The identity provider's token names nobody (no subject)."))?;
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            refused(
                "The identity provider did not tell Pinhole your email address: its administrator \
                 needs to release the email scope to this client.",
            )
        })?
        .to_lowercase();
    let domain = match email.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain.to_string(),
        _ => return Err(refused(format!("{email:?} is not an email address."))),
    };
    if !plain_name(&email) {
        return Err(refused(format!(
            "The email address {email:?} is longer than {MAX_NAME} characters or has spaces: \
             Pinhole cannot use it as a user name."
        )));
    }
    if !is_true(claims.get("email_verified")) {
        return Err(refused(format!(
            "The identity provider has not verified the email address {email}: verify it there, \
             then sign in again."
        )));
    }
    if !mapping.allowed_domains.is_empty()
        && !mapping
            .allowed_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
    {
        return Err(refused(format!(
            "Email addresses at {domain} may not sign in to this Pinhole server (it takes {}).",
            mapping.allowed_domains.join(", ")
        )));
    }
    let account = match &mapping.account_claim {
        None => domain,
        Some(claim) => {
            let value = match claims.get(claim) {
                Some(Value::String(s)) => s.trim().to_string(),
                Some(Value::Array(a)) if a.len() == 1 => {
                    a[0].as_str().unwrap_or_default().trim().to_string()
                }
                _ => String::new(),
            };
            if !plain_name(&value) {
                return Err(refused(format!(
                    "The identity provider's token has no usable {claim:?} claim, which names \
                     your Pinhole account: its administrator needs to add it."
                )));
            }
            value
        }
    };
    Ok(Identity {
        subject: subject.to_string(),
        email,
        account,
        groups: groups(claims.get("groups")),
    })
}

/// The `groups` claim: a list of names (or one name); other values and oversized names are
/// left out, and at most [`MAX_GROUPS`] are kept.
fn groups(v: Option<&Value>) -> Vec<String> {
    let names: Vec<&str> = match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => vec![],
    };
    let mut out: Vec<String> = names
        .into_iter()
        .map(|g| g.strip_prefix("group:").unwrap_or(g).trim())
        .filter(|g| !g.is_empty() && g.len() <= MAX_GROUP && !g.contains(','))
        .map(str::to_string)
        .take(MAX_GROUPS)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_verified_email_names_the_user_and_its_domain_the_account() {
        let c = claims(
            json!({"sub": "u1", "email": "Alice@Example.COM", "email_verified": true,
            "groups": ["dev", "group:ops", 7, "dev", "a,b", ""]}),
        );
        let id = identity(&c, &Mapping::default()).unwrap();
        assert_eq!(id.email, "alice@example.com");
        assert_eq!(id.account, "example.com");
        assert_eq!(id.subject, "u1");
        assert_eq!(id.groups, vec!["dev".to_string(), "ops".to_string()]);
    }

    #[test]
    fn unverified_or_missing_emails_are_refused_in_words() {
        let m = Mapping::default();
        let e = identity(
            &claims(json!({"sub": "u", "email": "a@x.org", "email_verified": false})),
            &m,
        )
        .unwrap_err();
        assert!(
            e.0.contains("has not verified the email address a@x.org"),
            "{e}"
        );
        let e = identity(&claims(json!({"sub": "u", "email": "a@x.org"})), &m).unwrap_err();
        assert!(e.0.contains("not verified"), "{e}");
        let e = identity(&claims(json!({"sub": "u"})), &m).unwrap_err();
        assert!(e.0.contains("email scope"), "{e}");
        let e = identity(&claims(json!({"email": "a@x.org"})), &m).unwrap_err();
        assert!(e.0.contains("no subject"), "{e}");
        let e = identity(
            &claims(json!({"sub": "u", "email": "nobody", "email_verified": "true"})),
            &m,
        )
        .unwrap_err();
        assert!(e.0.contains("not an email address"), "{e}");
    }

    #[test]
    fn the_account_claim_and_allowed_domains_decide_the_account() {
        let m = Mapping {
            account_claim: Some("org".into()),
            allowed_domains: vec!["example.com".into()],
        };
        let ok = claims(
            json!({"sub": "u", "email": "a@EXAMPLE.com", "email_verified": true, "org": "acme"}),
        );
        assert_eq!(identity(&ok, &m).unwrap().account, "acme");
        let other = claims(
            json!({"sub": "u", "email": "a@evil.net", "email_verified": true, "org": "acme"}),
        );
        let e = identity(&other, &m).unwrap_err();
        assert!(e.0.contains("evil.net may not sign in"), "{e}");
        let none = claims(json!({"sub": "u", "email": "a@example.com", "email_verified": true}));
        let e = identity(&none, &m).unwrap_err();
        assert!(e.0.contains("\"org\" claim"), "{e}");
    }
}

//! Pure rules about tags and stored policies: tags as stored, their spelling, which tags a
//! registration or update gets (an auth key's, or those its user owns under the policy), and a
//! stored policy read back.

use pinhole_policy::Policy;

/// Tags as stored (comma-separated).
pub fn tags_of(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks that each tag is spelt `tag:NAME` (letters, digits, `-`, `_`).
pub fn check_tag_names(tags: &[String]) -> Result<(), String> {
    for t in tags {
        let name = t.strip_prefix("tag:").unwrap_or("");
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "{t:?} is not a tag: write tag:NAME (letters, digits, - and _)"
            ));
        }
    }
    Ok(())
}

/// The tags a registration or update gets: an auth key's tags (what the node asks for must be
/// among them), or what the node asks for if its user owns every one under `policy`.
pub fn grant_tags(
    policy: Option<&Policy>,
    user: Option<&str>,
    asked: &[String],
    key_tags: &[String],
) -> Result<Vec<String>, String> {
    check_tag_names(asked)?;
    if !key_tags.is_empty() {
        if let Some(t) = asked.iter().find(|t| !key_tags.contains(t)) {
            return Err(format!(
                "{t} is not among the auth key's tags ({})",
                key_tags.join(", ")
            ));
        }
        return Ok(key_tags.to_vec());
    }
    let mut granted = Vec::new();
    for t in asked {
        let Some(p) = policy else {
            return Err(format!(
                "{t} cannot be given: the account has no policy, so no tag has owners"
            ));
        };
        if !p.tag_owners.contains_key(t) {
            return Err(format!("{t} is not a tag of the policy (its tagOwners)"));
        }
        match user {
            Some(u) if p.owns_tag(u, t) => granted.push(t.clone()),
            Some(u) => {
                return Err(format!(
                    "{u} may not tag nodes {t}: the policy's tagOwners does not list them"
                ))
            }
            None => {
                return Err(format!(
                    "{t} needs a person who owns it: this node joined with an auth key without tags"
                ))
            }
        }
    }
    granted.sort();
    granted.dedup();
    Ok(granted)
}

/// Parses a stored policy; one that no longer reads (it was checked when set) denies all.
pub fn parse_stored(account_id: &str, text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| {
        tracing::error!(account = %account_id, "the stored policy does not read ({e}): nothing is allowed until it is set again");
        Policy {
            acls: Some(Vec::new()),
            ..Policy::default()
        }
    })
}

/// Adds the users an identity provider puts in a group (`(user, "dev,ops")`) to the policy's
/// groups of the same name (`group:dev`); groups the policy does not name are left out.
pub fn add_idp_groups(policy: &mut Policy, users: &[(String, String)]) {
    for (user, groups) in users {
        for g in groups.split(',').filter(|g| !g.is_empty()) {
            if let Some(members) = policy.groups.get_mut(&format!("group:{g}")) {
                if !members.contains(user) {
                    members.push(user.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = r#"{ "groups": { "group:dev": ["alice"] },
        "tagOwners": { "tag:server": ["group:dev"], "tag:db": ["bob"] },
        "acls": [] }"#;

    #[test]
    fn the_providers_groups_join_the_groups_the_policy_names() {
        let mut p = Policy::parse(P).unwrap();
        let users = vec![
            ("carol@x.org".to_string(), "dev,ops".to_string()),
            ("alice".to_string(), "dev".to_string()),
        ];
        add_idp_groups(&mut p, &users);
        assert_eq!(p.groups["group:dev"], vec!["alice", "carol@x.org"]);
        assert!(
            !p.groups.contains_key("group:ops"),
            "a group the policy does not name"
        );
        // carol may now tag nodes tag:server, like every member of group:dev.
        let tags = vec!["tag:server".to_string()];
        assert_eq!(
            grant_tags(Some(&p), Some("carol@x.org"), &tags, &[]).unwrap(),
            tags
        );
    }

    #[test]
    fn tags_go_to_their_owners_only() {
        let p = Policy::parse(P).unwrap();
        let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            grant_tags(Some(&p), Some("alice"), &tags(&["tag:server"]), &[]).unwrap(),
            tags(&["tag:server"])
        );
        let e = grant_tags(Some(&p), Some("alice"), &tags(&["tag:db"]), &[]).unwrap_err();
        assert!(e.contains("alice may not tag nodes tag:db"), "{e}");
        assert!(
            grant_tags(Some(&p), Some("alice"), &tags(&["tag:nope"]), &[])
                .unwrap_err()
                .contains("not a tag of the policy")
        );
        assert!(grant_tags(None, Some("alice"), &tags(&["tag:server"]), &[])
            .unwrap_err()
            .contains("no policy"));
        assert!(grant_tags(Some(&p), None, &tags(&["tag:server"]), &[]).is_err());
        // An auth key's tags are the node's, whatever the policy; asking for others is refused.
        assert_eq!(
            grant_tags(None, None, &[], &tags(&["tag:ci"])).unwrap(),
            tags(&["tag:ci"])
        );
        assert!(grant_tags(None, None, &tags(&["tag:x"]), &tags(&["tag:ci"])).is_err());
        assert!(grant_tags(Some(&p), Some("alice"), &tags(&["server"]), &[])
            .unwrap_err()
            .contains("not a tag"));
        assert_eq!(tags_of("tag:a, tag:b,,"), tags(&["tag:a", "tag:b"]));
    }
}

//! Rules on control: each account's access policy (kept as written, checked before it is
//! taken), node tags and who may set them, the operator's `policy get|set|check`, and how a
//! running server hears of a new policy (accounts marked changed, read a few times a second).

use crate::admin::AdminError;
use crate::state::now_ms;
use crate::store::{Store, StoreError};
use pinhole_policy::Policy;

impl Store {
    /// An account's policy as written; none: everyone reaches everyone.
    pub async fn policy(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT policy FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Stores an account's policy (none: removes it) and marks the account changed.
    pub async fn set_policy(
        &self,
        account_id: &str,
        text: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE accounts SET policy = $1, policy_changed_at = $2 WHERE id = $3")
            .bind(text)
            .bind(now)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Accounts whose policy changed after `since` (ms), with the change's mark.
    pub async fn changed_policies(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, policy_changed_at FROM accounts WHERE policy_changed_at > $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets a node's tags and marks it changed (its map entry and everyone's view follow).
    pub async fn set_node_tags(
        &self,
        id: &str,
        tags: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET tags = $1, changed_at = $2 WHERE id = $3")
            .bind(tags.join(","))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_auth_key_tags(&self, id: &str, tags: &[String]) -> Result<(), StoreError> {
        sqlx::query("UPDATE auth_keys SET tags = $1 WHERE id = $2")
            .bind(tags.join(","))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

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

/// `authkey create --tags`: the tags every node the key registers gets.
pub async fn tag_auth_key(store: &Store, key: &str, tags: &[String]) -> Result<(), AdminError> {
    check_tag_names(tags).map_err(AdminError::Invalid)?;
    let hash = crate::secret::hash_token(key);
    let row = store
        .auth_key_by_hash(&hash)
        .await?
        .ok_or_else(|| AdminError::Invalid("the new auth key is gone".into()))?;
    store.set_auth_key_tags(&row.id, tags).await?;
    Ok(())
}

/// `policy check FILE`: reads the policy and runs its tests; the warnings on success.
pub fn check(text: &str) -> Result<Vec<String>, AdminError> {
    pinhole_policy::load(text)
        .map(|_| Vec::new())
        .map_err(|e| AdminError::Invalid(format!("the policy is refused: {e}")))
}

/// `policy set FILE`: checks and stores an account's policy (a refused one changes nothing).
/// Returns warnings: user names the policy mentions that are no user of the account.
pub async fn set(store: &Store, account: &str, text: &str) -> Result<Vec<String>, AdminError> {
    let p = pinhole_policy::load(text).map_err(|e| {
        AdminError::Invalid(format!("the policy is refused, the old one stays: {e}"))
    })?;
    let acc = account_row(store, account).await?;
    let users: Vec<String> = store
        .users()
        .await?
        .into_iter()
        .filter(|u| u.account_id == acc.id)
        .map(|u| u.name)
        .collect();
    let warnings = p
        .user_names()
        .into_iter()
        .filter(|u| !users.contains(u))
        .map(|u| format!("{u:?} is neither a host of the policy nor a user of account {account}"))
        .collect();
    store.set_policy(&acc.id, Some(text), now_ms()).await?;
    Ok(warnings)
}

/// `policy get`: the account's policy as it was written; none if it has none.
pub async fn get(store: &Store, account: &str) -> Result<Option<String>, AdminError> {
    let acc = account_row(store, account).await?;
    Ok(store.policy(&acc.id).await?)
}

/// `policy remove`: back to everyone reaching everyone.
pub async fn remove(store: &Store, account: &str) -> Result<(), AdminError> {
    let acc = account_row(store, account).await?;
    store.set_policy(&acc.id, None, now_ms()).await?;
    Ok(())
}

async fn account_row(store: &Store, account: &str) -> Result<crate::store::AccountRow, AdminError> {
    store
        .account_by_name(account)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("there is no account {account:?}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = r#"{ "groups": { "group:dev": ["alice"] },
        "tagOwners": { "tag:server": ["group:dev"], "tag:db": ["bob"] },
        "acls": [] }"#;

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

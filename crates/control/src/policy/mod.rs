//! Rules on control: each account's access policy (kept as written, checked before it is
//! taken), node tags, the operator's `policy get|set|check|remove` and `authkey create --tags
//! --user`, and how a running server hears of a new policy (accounts marked changed, read a few
//! times a second). Who may have which tag, and the stored text read back: [`grants`].

use crate::admin::AdminError;
use crate::state::now_ms;
use crate::store::{Store, StoreError};

pub mod grants;
pub use grants::{check_tag_names, grant_tags, parse_stored, tags_of};

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

    /// Sets a node's tags (its caller publishes the node: registration and its own update).
    pub async fn set_node_tags(&self, id: &str, tags: &[String]) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET tags = $1 WHERE id = $2")
            .bind(tags.join(","))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives an auth key tags and an owner (the nodes it registers get them).
    pub async fn set_auth_key_owner(
        &self,
        id: &str,
        tags: &[String],
        user_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE auth_keys SET tags = $1, user_id = $2 WHERE id = $3")
            .bind(tags.join(","))
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// `authkey create --tags T --user U`: the tags every node the key registers gets, and the
/// person it registers them for (who must be a user of the key's account).
pub async fn own_auth_key(
    store: &Store,
    key: &str,
    tags: &[String],
    user: Option<&str>,
) -> Result<(), AdminError> {
    check_tag_names(tags).map_err(AdminError::Invalid)?;
    let hash = crate::secret::hash_token(key);
    let row = store
        .auth_key_by_hash(&hash)
        .await?
        .ok_or_else(|| AdminError::Invalid("the new auth key is gone".into()))?;
    let user_id = match user {
        None => None,
        Some(name) => match store.user_by_name(name).await? {
            Some(u) if u.account_id == row.account_id => Some(u.id),
            _ => {
                store.revoke_auth_key(&row.id, now_ms()).await?;
                return Err(AdminError::Invalid(format!(
                    "there is no user {name:?} in account {}: the key was not made",
                    row.account_name
                )));
            }
        },
    };
    store
        .set_auth_key_owner(&row.id, tags, user_id.as_deref())
        .await?;
    Ok(())
}

/// `policy check FILE`: reads the policy and runs its tests.
pub fn check(text: &str) -> Result<(), AdminError> {
    pinhole_policy::load(text)
        .map(|_| ())
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

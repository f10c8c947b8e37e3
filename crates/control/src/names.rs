//! Names (DNS) on control: the account's DNS suffix (a node's DNS name is its unique label
//! under it), the operator's renames and suffix changes, and how a running server hears of
//! them (rows marked changed, read every half second and published to the maps).

use crate::admin::AdminError;
use crate::state::now_ms;
use crate::store::{AccountRow, Store, StoreError};
use pinhole_dns::label;

impl Store {
    /// Sets an account's DNS suffix (none: the default) and marks its nodes changed.
    pub async fn set_dns_suffix(
        &self,
        account_id: &str,
        suffix: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE accounts SET dns_suffix = $1 WHERE id = $2")
            .bind(suffix)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "UPDATE nodes SET changed_at = $1 WHERE account_id = $2 AND removed_at IS NULL",
        )
        .bind(now)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account called `name`, if there is one.
    pub async fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, AccountRow>("SELECT id, name FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// An account's DNS suffix, if it set one.
    pub async fn dns_suffix(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT dns_suffix FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Renames a node and marks it changed; a name another node of the account has is a
    /// conflict.
    pub async fn rename_node(&self, id: &str, name: &str, now: i64) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE nodes SET name = $1, changed_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(StoreError::Conflict(
                format!("another node of the account is called {name:?}"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Nodes marked changed after `since` (ms): their ids, accounts, and the latest mark.
    pub async fn changed_nodes(
        &self,
        since: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, account_id, changed_at FROM nodes WHERE changed_at > $1 AND removed_at IS NULL",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// `pinhole-control node rename NODE NAME`: the new name as a DNS label (the error says why
/// it cannot be one, or who has it); the old and new names.
pub async fn rename_node(
    store: &Store,
    which: &str,
    new_name: &str,
) -> Result<(String, String), AdminError> {
    let wanted = label::label(new_name);
    if wanted != new_name {
        return Err(AdminError::Invalid(format!(
            "{new_name:?} is not a DNS label (lower-case letters, digits and inner hyphens, at most {} bytes): try {wanted:?}",
            label::MAX_LABEL
        )));
    }
    let row = crate::admin::one_node(store, which).await?;
    if row.name == wanted {
        return Ok((row.name.clone(), wanted));
    }
    let now = now_ms();
    store.rename_node(&row.id, &wanted, now).await?;
    store
        .notify(&format!("cli {} {}", row.account_id, row.id))
        .await?;
    Ok((row.name.clone(), wanted))
}

/// `pinhole-control account set NAME --dns-suffix S`: checks and stores the suffix (`-` or
/// the default goes back to the default); the suffix now in force.
pub async fn set_dns_suffix(
    store: &Store,
    account: &str,
    suffix: &str,
) -> Result<String, AdminError> {
    let checked =
        pinhole_dns::check_suffix(suffix).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let Some(acc) = store.account_by_name(account).await? else {
        return Err(AdminError::Invalid(format!(
            "no account called {account:?}"
        )));
    };
    let stored = (checked != pinhole_dns::DEFAULT_SUFFIX).then_some(checked.as_str());
    store.set_dns_suffix(&acc.id, stored, now_ms()).await?;
    Ok(checked)
}

//! The operator's commands: users, auth keys, sessions and nodes, straight on the database.

use crate::clock::{ms, now_ms};
use crate::secret::{self, TokenKind};
use crate::store::{NodeRow, Store, StoreError};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The account everything belongs to unless told otherwise.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Adds a user to `account` (created if new).
pub async fn add_user(
    store: &Store,
    account: &str,
    name: &str,
    password: &str,
) -> Result<(), AdminError> {
    if name.is_empty()
        || name.len() > 64
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AdminError::Invalid(
            "a user name is 1 to 64 characters without spaces".into(),
        ));
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(AdminError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    let hash = secret::hash_password(password)
        .map_err(|e| AdminError::Invalid(format!("cannot hash the password: {e}")))?;
    let now = now_ms();
    let acc = store.account(account, now).await?;
    store.add_user(&acc.id, name, &hash, now).await?;
    Ok(())
}

/// Creates an auth key and returns it (the only time it is shown).
pub async fn create_auth_key(
    store: &Store,
    account: &str,
    reusable: bool,
    expiry: Option<Duration>,
) -> Result<String, AdminError> {
    let now = now_ms();
    let acc = store.account(account, now).await?;
    let (key, hash) = secret::new_token(TokenKind::AuthKey);
    store
        .add_auth_key(&acc.id, &hash, reusable, now, expiry.map(|d| now + ms(d)))
        .await?;
    Ok(key)
}

fn when(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(ms) => {
            let secs = ms / 1000;
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}Z",
                rem / 3600,
                (rem % 3600) / 60
            )
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Store {
    /// Every auth key (never the keys themselves), oldest first.
    pub async fn auth_keys(&self) -> Result<Vec<crate::store::AuthKeyRow>, StoreError> {
        Ok(sqlx::query_as::<_, crate::store::AuthKeyRow>(&format!(
            "{} ORDER BY k.created_at",
            Self::AUTH_KEY_SELECT
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}

pub async fn list_auth_keys(store: &Store) -> Result<String, AdminError> {
    let now = now_ms();
    let mut out = format!(
        "{:<24} {:<12} {:<9} {:<18} {:<18} STATE\n",
        "ID", "ACCOUNT", "REUSABLE", "CREATED", "EXPIRES"
    );
    for k in store.auth_keys().await? {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else if k.reusable == 0 && k.used_at.is_some() {
            "used"
        } else {
            "valid"
        };
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<9} {:<18} {:<18} {state}",
            k.id,
            k.account_name,
            if k.reusable != 0 { "yes" } else { "no" },
            when(Some(k.created_at)),
            when(k.expires_at)
        );
    }
    Ok(out)
}

pub async fn list_users(store: &Store) -> Result<String, AdminError> {
    let mut out = format!("{:<24} ACCOUNT\n", "USER");
    for u in store.users().await? {
        let _ = writeln!(out, "{:<24} {}", u.name, u.account_name);
    }
    Ok(out)
}

/// Signs a user out everywhere.
pub async fn revoke_sessions(store: &Store, user: &str) -> Result<u64, AdminError> {
    let u = store
        .user_by_name(user)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no user called {user:?}")))?;
    Ok(store.revoke_user_sessions(&u.id, now_ms()).await?)
}

/// The node table as text, or as JSON.
pub async fn list_nodes(store: &Store, json: bool) -> Result<String, AdminError> {
    let now = now_ms();
    let rows = store.all_nodes(now).await?;
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "name": r.name, "account": r.account_name, "user": r.user_name,
                    "ipv4": Ipv4Addr::from(r.ipv4 as u32).to_string(), "node_key": r.node_key,
                    "os": r.os, "online": r.online > 0, "last_seen": r.last_seen,
                    "expires_at": r.expires_at, "endpoints": r.endpoints,
                    "home_relay": r.home_relay,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
    }
    let mut out = format!(
        "{:<24} {:<20} {:<12} {:<16} {:<8} {:<18} EXPIRES\n",
        "ID", "NAME", "ACCOUNT", "ADDRESS", "ONLINE", "LAST SEEN"
    );
    for r in rows {
        let expired = r.expires_at.is_some_and(|e| e <= now);
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:<12} {:<16} {:<8} {:<18} {}{}",
            r.id,
            r.name,
            r.account_name,
            Ipv4Addr::from(r.ipv4 as u32).to_string(),
            if r.online > 0 { "yes" } else { "no" },
            when(r.last_seen),
            when(r.expires_at),
            if expired { " (expired)" } else { "" }
        );
    }
    Ok(out)
}

/// The node with id or name `which` (a name must be unambiguous across accounts).
pub async fn one_node(store: &Store, which: &str) -> Result<NodeRow, AdminError> {
    let rows = store.all_nodes(now_ms()).await?;
    let mut matches = rows
        .into_iter()
        .filter(|r| r.id == which || r.name == which);
    match (matches.next(), matches.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(AdminError::Invalid(format!(
            "no node with id or name {which:?} (see `node list`)"
        ))),
        (Some(_), Some(_)) => Err(AdminError::Invalid(format!(
            "{which:?} names nodes in several accounts: give the id"
        ))),
    }
}

/// Removes a node by id or by name (a name must be unambiguous).
pub async fn remove_node(store: &Store, which: &str) -> Result<String, AdminError> {
    let now = now_ms();
    let row = one_node(store, which).await?;
    store.remove_node(&row.id, now).await?;
    store
        .notify(&format!("cli {} {}", row.account_id, row.id))
        .await?;
    Ok(row.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(when(Some(0)), "1970-01-01 00:00Z");
        assert_eq!(when(Some(1_795_000_000_000)), "2026-11-18 11:06Z");
        assert_eq!(when(None), "-");
    }
}

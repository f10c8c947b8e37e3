//! The database: one set of queries and migrations for SQLite (the embedded default) and
//! PostgreSQL (several control instances), through sqlx's `Any` driver.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, FromRow};
use std::time::Duration;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the overlay address range is full")]
    AddressesExhausted,
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    kind: DbKind,
    url: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub password_hash: String,
    pub account_name: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub account_id: String,
    pub account_name: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AuthKeyRow {
    pub id: String,
    pub account_id: String,
    pub account_name: String,
    pub reusable: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Tags given to the nodes it registers (comma-separated).
    pub tags: String,
    /// The person whose nodes it registers, if it belongs to one.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DeviceCodeRow {
    pub code_hash: String,
    pub user_code: String,
    pub expires_at: i64,
    pub approved_user_id: Option<String>,
    pub last_poll: Option<i64>,
    pub consumed: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct NodeRow {
    pub id: String,
    pub account_id: String,
    pub account_name: String,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub node_key: String,
    pub disco_key: String,
    pub hostname: String,
    pub name: String,
    pub os: String,
    pub ipv4: i64,
    pub endpoints: String,
    pub home_relay: Option<String>,
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub online: i64,
    /// The account's DNS suffix, if it set one.
    pub dns_suffix: Option<String>,
    /// The node's tags (comma-separated).
    pub tags: String,
    /// Routes it offers, and routes control approved (comma-separated CIDRs).
    pub advertised_routes: String,
    pub approved_routes: String,
}

/// A node about to be inserted.
pub struct NewNode<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub user_id: Option<&'a str>,
    pub node_key: &'a str,
    pub disco_key: &'a str,
    pub hostname: &'a str,
    pub name: &'a str,
    pub os: &'a str,
    pub ipv4: i64,
    pub token_hash: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
}

/// An instance whose heartbeat is older than this no longer counts for presence.
pub const INSTANCE_STALE_MS: i64 = 45_000;

const NODE_COLUMNS: &str =
    "n.id, n.account_id, a.name AS account_name, n.user_id, u.name AS user_name, \
     n.node_key, n.disco_key, n.hostname, n.name, n.os, n.ipv4, n.endpoints, n.home_relay, \
     n.last_seen, n.created_at, n.expires_at, a.dns_suffix, n.tags, n.advertised_routes, \
     n.approved_routes, \
     (SELECT COUNT(*) FROM presence p JOIN instances i ON i.id = p.instance_id \
      WHERE p.node_id = n.id AND p.streams > 0 AND i.seen > $1) AS online";

const NODE_FROM: &str = "FROM nodes n JOIN accounts a ON a.id = n.account_id \
     LEFT JOIN users u ON u.id = n.user_id";

impl Store {
    /// Connects to `url` (creating a SQLite file if needed) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (kind, url) = normalise(url)?;
        let options = AnyPoolOptions::new()
            .max_connections(match kind {
                DbKind::Sqlite => 4,
                DbKind::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        let options = if kind == DbKind::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, kind, url })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The URL the store was opened with (for a second connection, such as a listener).
    pub fn url(&self) -> &str {
        &self.url
    }

    // ---- settings ----

    /// The value of `name`, set to `make()` the first time (first writer wins across instances).
    pub async fn setting_or_init(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let value = make();
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&value)
        .execute(&self.pool)
        .await?;
        let (v,): (String,) = sqlx::query_as("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    // ---- accounts and users ----

    /// The account called `name`, created if missing.
    pub async fn account(&self, name: &str, now: i64) -> Result<AccountRow, StoreError> {
        sqlx::query(
            "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(crate::secret::new_id())
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_as::<_, AccountRow>("SELECT id, name FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn add_user(
        &self,
        account_id: &str,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO users (id, account_id, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(crate::secret::new_id())
        .bind(account_id)
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a user called {name:?} exists already"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT u.id, u.account_id, u.name, u.password_hash, a.name AS account_name \
             FROM users u JOIN accounts a ON a.id = u.account_id WHERE u.name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT u.id, u.account_id, u.name, u.password_hash, a.name AS account_name \
             FROM users u JOIN accounts a ON a.id = u.account_id ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- sessions ----

    pub async fn add_session(
        &self,
        user_id: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(crate::secret::new_id())
        .bind(user_id)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as::<_, SessionRow>(
            "SELECT s.id, s.user_id, u.name AS user_name, u.account_id, a.name AS account_name, \
             s.expires_at, s.revoked_at FROM sessions s JOIN users u ON u.id = s.user_id \
             JOIN accounts a ON a.id = u.account_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn revoke_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes every session of the user; returns how many were live.
    pub async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    // ---- auth keys ----

    pub async fn add_auth_key(
        &self,
        account_id: &str,
        key_hash: &str,
        reusable: bool,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let id = crate::secret::new_id();
        sqlx::query(
            "INSERT INTO auth_keys (id, account_id, key_hash, reusable, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(account_id)
        .bind(key_hash)
        .bind(i64::from(reusable))
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    pub(crate) const AUTH_KEY_SELECT: &'static str =
        "SELECT k.id, k.account_id, a.name AS account_name, k.reusable, k.created_at, \
         k.expires_at, k.used_at, k.revoked_at, k.tags, k.user_id, u.name AS user_name \
         FROM auth_keys k JOIN accounts a ON a.id = k.account_id LEFT JOIN users u ON u.id = k.user_id";

    pub async fn auth_key_by_hash(&self, key_hash: &str) -> Result<Option<AuthKeyRow>, StoreError> {
        Ok(sqlx::query_as::<_, AuthKeyRow>(&format!(
            "{} WHERE k.key_hash = $1",
            Self::AUTH_KEY_SELECT
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks a one-off key used; false if it was used already (by a racing registration too).
    pub async fn use_auth_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE auth_keys SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn revoke_auth_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE auth_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no live auth key with id {id:?} (see `authkey list`)"
            )));
        }
        Ok(())
    }

    // ---- device codes ----

    pub async fn add_device_code(
        &self,
        code_hash: &str,
        user_code: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_codes (code_hash, user_code, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(code_hash)
        .bind(user_code)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    const DEVICE_SELECT: &'static str =
        "SELECT code_hash, user_code, expires_at, approved_user_id, last_poll, consumed FROM device_codes";

    pub async fn device_by_hash(
        &self,
        code_hash: &str,
    ) -> Result<Option<DeviceCodeRow>, StoreError> {
        Ok(sqlx::query_as::<_, DeviceCodeRow>(&format!(
            "{} WHERE code_hash = $1",
            Self::DEVICE_SELECT
        ))
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceCodeRow>, StoreError> {
        Ok(sqlx::query_as::<_, DeviceCodeRow>(&format!(
            "{} WHERE user_code = $1",
            Self::DEVICE_SELECT
        ))
        .bind(user_code)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn approve_device(&self, code_hash: &str, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_codes SET approved_user_id = $1 WHERE code_hash = $2")
            .bind(user_id)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn device_polled(&self, code_hash: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_codes SET last_poll = $1 WHERE code_hash = $2")
            .bind(now)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an approved code as exchanged for a token; false if it already was.
    pub async fn consume_device(&self, code_hash: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE device_codes SET consumed = 1 WHERE code_hash = $1 AND consumed = 0",
        )
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- nodes ----

    async fn nodes_where(
        &self,
        cond: &str,
        bind: Option<&str>,
        now: i64,
    ) -> Result<Vec<NodeRow>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} {NODE_FROM} WHERE n.removed_at IS NULL {cond} ORDER BY n.ipv4"
        );
        let q = sqlx::query_as::<_, NodeRow>(&sql).bind(now - INSTANCE_STALE_MS);
        let q = match bind {
            Some(b) => q.bind(b.to_string()),
            None => q,
        };
        Ok(q.fetch_all(&self.pool).await?)
    }

    pub async fn node_by_key(
        &self,
        node_key: &str,
        now: i64,
    ) -> Result<Option<NodeRow>, StoreError> {
        Ok(self
            .nodes_where("AND n.node_key = $2", Some(node_key), now)
            .await?
            .pop())
    }

    pub async fn node_by_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<NodeRow>, StoreError> {
        Ok(self
            .nodes_where("AND n.token_hash = $2", Some(token_hash), now)
            .await?
            .pop())
    }

    pub async fn node_by_id(&self, id: &str, now: i64) -> Result<Option<NodeRow>, StoreError> {
        Ok(self
            .nodes_where("AND n.id = $2", Some(id), now)
            .await?
            .pop())
    }

    pub async fn nodes_in_account(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Vec<NodeRow>, StoreError> {
        self.nodes_where("AND n.account_id = $2", Some(account_id), now)
            .await
    }

    pub async fn all_nodes(&self, now: i64) -> Result<Vec<NodeRow>, StoreError> {
        self.nodes_where("", None, now).await
    }

    /// A removed node's row, so that its key can register afresh.
    pub async fn purge_removed_node_key(&self, node_key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE node_key = $1 AND removed_at IS NOT NULL")
            .bind(node_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts a node; `Conflict` if its address, name or key is taken (the caller picks again).
    pub async fn insert_node(&self, n: &NewNode<'_>) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO nodes (id, account_id, user_id, node_key, disco_key, hostname, name, os, ipv4, \
             token_hash, created_at, expires_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11)",
        )
        .bind(n.id)
        .bind(n.account_id)
        .bind(n.user_id)
        .bind(n.node_key)
        .bind(n.disco_key)
        .bind(n.hostname)
        .bind(n.name)
        .bind(n.os)
        .bind(n.ipv4)
        .bind(n.token_hash)
        .bind(n.now)
        .bind(n.expires_at)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// A known node signs in again: new token, keys and expiry; same addresses and name.
    #[allow(clippy::too_many_arguments)]
    pub async fn reregister_node(
        &self,
        id: &str,
        user_id: Option<&str>,
        disco_key: &str,
        hostname: &str,
        os: &str,
        token_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nodes SET user_id = COALESCE($1, user_id), disco_key = $2, hostname = $3, os = $4, \
             token_hash = $5, expires_at = $6 WHERE id = $7",
        )
        .bind(user_id)
        .bind(disco_key)
        .bind(hostname)
        .bind(os)
        .bind(token_hash)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn update_node(
        &self,
        id: &str,
        endpoints: Option<&str>,
        home_relay: Option<Option<&str>>,
        disco_key: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut sql = String::from("UPDATE nodes SET last_seen = $1");
        let mut n = 1;
        let mut next = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(", {col} = ${n}"));
        };
        if endpoints.is_some() {
            next("endpoints", &mut sql);
        }
        if home_relay.is_some() {
            next("home_relay", &mut sql);
        }
        if disco_key.is_some() {
            next("disco_key", &mut sql);
        }
        sql.push_str(&format!(" WHERE id = ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(now);
        if let Some(e) = endpoints {
            q = q.bind(e);
        }
        if let Some(h) = home_relay {
            q = q.bind(h);
        }
        if let Some(d) = disco_key {
            q = q.bind(d);
        }
        q.bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn touch_node(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a node removed (its token stops working at once); the row goes later.
    pub async fn remove_node(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET removed_at = $1, token_hash = $2 WHERE id = $3 AND removed_at IS NULL",
        )
        .bind(now)
        .bind(format!("removed:{id}"))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ids and accounts of nodes that were removed or have expired.
    pub async fn gone_nodes(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, account_id FROM nodes WHERE removed_at IS NOT NULL \
             OR (expires_at IS NOT NULL AND expires_at <= $1)",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes rows of nodes removed more than `age_ms` ago.
    pub async fn purge_removed(&self, now: i64, age_ms: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE removed_at IS NOT NULL AND removed_at < $1")
            .bind(now - age_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The highest IPv4 address in use (as an integer), if any.
    pub async fn max_ipv4(&self) -> Result<Option<i64>, StoreError> {
        let (v,): (Option<i64>,) = sqlx::query_as("SELECT MAX(ipv4) FROM nodes")
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    /// Every IPv4 address in use, ascending.
    pub async fn used_ipv4(&self) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT ipv4 FROM nodes ORDER BY ipv4")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn name_taken(&self, account_id: &str, name: &str) -> Result<bool, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM nodes WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    // ---- presence ----

    pub async fn instance_beat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, seen) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen = $2",
        )
        .bind(instance)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets every stream an instance held (at its start, or when it stopped beating).
    pub async fn clear_instance(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT node_id FROM presence WHERE instance_id = $1 AND streams > 0")
                .bind(instance)
                .fetch_all(&self.pool)
                .await?;
        sqlx::query("DELETE FROM presence WHERE instance_id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(ids.into_iter().map(|r| r.0).collect())
    }

    /// Instances that stopped beating.
    pub async fn stale_instances(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM instances WHERE seen <= $1")
            .bind(now - INSTANCE_STALE_MS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Adds `delta` (+1 or -1) to the streams `instance` holds for `node`.
    pub async fn presence(&self, node: &str, instance: &str, delta: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO presence (node_id, instance_id, streams) VALUES ($1, $2, $3) \
             ON CONFLICT (node_id, instance_id) DO UPDATE SET streams = presence.streams + $3",
        )
        .bind(node)
        .bind(instance)
        .bind(delta)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Tells the other control instances that a node changed (PostgreSQL only; SQLite has one).
    pub async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        if self.kind == DbKind::Postgres {
            sqlx::query("SELECT pg_notify('pinhole_nodes', $1)")
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

/// Checks the URL's scheme; a SQLite file is created if missing.
fn normalise(url: &str) -> Result<(DbKind, String), StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.contains("mode=") || rest.contains(":memory:") {
            return Ok((DbKind::Sqlite, url.to_string()));
        }
        let sep = if rest.contains('?') { '&' } else { '?' };
        Ok((DbKind::Sqlite, format!("{url}{sep}mode=rwc")))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((DbKind::Postgres, url.to_string()))
    } else {
        Err(StoreError::Url(url.to_string()))
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            normalise("sqlite:///tmp/x.db").unwrap(),
            (DbKind::Sqlite, "sqlite:///tmp/x.db?mode=rwc".to_string())
        );
        assert_eq!(normalise("postgres://u@h/db").unwrap().0, DbKind::Postgres);
        assert!(matches!(normalise("mysql://x"), Err(StoreError::Url(_))));
    }
}

//! What sign-in with an identity provider keeps: sign-ins waiting for the provider's answer
//! (found by their state's hash, taken once) and the users it created, known by issuer and
//! subject, with the groups the provider last named.

use crate::store::{Store, StoreError, UserRow};

/// A sign-in between the redirect to the provider and its way back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginRow {
    pub code_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub browser_hash: String,
    pub redirect_uri: String,
    pub expires_at: i64,
}

/// A new sign-in waiting for the provider.
pub struct NewLogin<'a> {
    pub state_hash: &'a str,
    pub code_hash: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub browser_hash: &'a str,
    pub redirect_uri: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

impl Store {
    /// Keeps a sign-in until the provider sends the person back (and forgets expired ones).
    pub async fn add_oidc_login(&self, l: &NewLogin<'_>) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
            .bind(l.now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, code_hash, nonce, pkce_verifier, browser_hash, \
             redirect_uri, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(l.state_hash)
        .bind(l.code_hash)
        .bind(l.nonce)
        .bind(l.pkce_verifier)
        .bind(l.browser_hash)
        .bind(l.redirect_uri)
        .bind(l.now)
        .bind(l.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the sign-in with this state: a second call with the same state finds nothing.
    pub async fn take_oidc_login(&self, state_hash: &str) -> Result<Option<LoginRow>, StoreError> {
        Ok(sqlx::query_as::<_, LoginRow>(
            "DELETE FROM oidc_logins WHERE state_hash = $1 RETURNING code_hash, nonce, \
             pkce_verifier, browser_hash, redirect_uri, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user the provider `issuer` knows as `subject`.
    pub async fn user_by_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT u.id, u.account_id, u.name, u.password_hash, a.name AS account_name \
             FROM users u JOIN accounts a ON a.id = u.account_id \
             WHERE u.oidc_issuer = $1 AND u.oidc_subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Adds a user who signs in only through the provider (no password).
    pub async fn add_oidc_user(
        &self,
        account_id: &str,
        name: &str,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO users (id, account_id, name, password_hash, created_at, oidc_issuer, \
             oidc_subject) VALUES ($1, $2, $3, '', $4, $5, $6)",
        )
        .bind(crate::secret::new_id())
        .bind(account_id)
        .bind(name)
        .bind(now)
        .bind(issuer)
        .bind(subject)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if crate::store::is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a Pinhole user called {name} exists already and signs in another way"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the groups the provider named for a user; when they changed, the account's
    /// policy is marked changed so that every instance applies the new membership.
    pub async fn set_idp_groups(
        &self,
        user: &UserRow,
        groups: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let text = groups.join(",");
        let changed =
            sqlx::query("UPDATE users SET idp_groups = $1 WHERE id = $2 AND idp_groups <> $1")
                .bind(&text)
                .bind(&user.id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0;
        if changed {
            sqlx::query(
                "UPDATE accounts SET policy_changed_at = $1 WHERE id = $2 AND policy IS NOT NULL",
            )
            .bind(now)
            .bind(&user.account_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(changed)
    }

    /// Each user of an account with the provider's groups for them.
    pub async fn idp_groups(&self, account_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, idp_groups FROM users WHERE account_id = $1 AND idp_groups <> ''",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

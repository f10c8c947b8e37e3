//! Sign-in for people: the device authorisation grant of RFC 8628. The app or CLI asks for a
//! code, shows it, and polls; the person opens the server's page, types the code, their name
//! and password, and the device's next poll gets a session token.

use crate::secret::{self, TokenKind};
use crate::state::{ms, ApiErr, AppState, ClientAddr};
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form, Json};
use pinhole_proto::control::{AccessToken, DeviceCode, OAuthError};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The URL people reach the server at.
pub(crate) fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &st.settings.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if st.settings.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// `POST /api/v1/device/code`
pub async fn code(
    State(st): State<Arc<AppState>>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<Json<DeviceCode>, ApiErr> {
    let ip = client.0.ip().to_string();
    let now_i = Instant::now();
    st.code_limiter
        .check(&ip, now_i)
        .map_err(ApiErr::too_many)?;
    st.code_limiter.fail(&ip, now_i);
    let now = st.now_ms();
    let (device_code, hash) = secret::new_token(TokenKind::DeviceCode);
    let ttl = st.settings.device_code_ttl;
    let mut user_code = secret::new_user_code();
    let mut tries = 0;
    loop {
        match st
            .store
            .add_device_code(&hash, &user_code, now, now + ms(ttl))
            .await
        {
            Ok(()) => break,
            Err(_) if tries < 3 => {
                tries += 1;
                user_code = secret::new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let base = base_url(&st, &headers);
    Ok(Json(DeviceCode {
        device_code,
        verification_uri: format!("{base}/device"),
        verification_uri_complete: format!("{base}/device?code={user_code}"),
        user_code,
        expires_in: ttl.as_secs(),
        interval: st.settings.device_poll_interval,
    }))
}

#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    device_code: String,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(OAuthError {
            error: error.to_string(),
            error_description: Some(description.to_string()),
        }),
    )
        .into_response()
}

/// `POST /api/v1/device/token` (form-encoded, RFC 8628 §3.4).
pub async fn token(
    State(st): State<Arc<AppState>>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, ApiErr> {
    let Ok(Form(form)) = form else {
        return Ok(oauth_error(
            "invalid_request",
            "expected a form with grant_type and device_code",
        ));
    };
    if form.grant_type.as_deref().is_some_and(|g| g != GRANT_TYPE) {
        return Ok(oauth_error(
            "unsupported_grant_type",
            "only the device_code grant is supported",
        ));
    }
    let hash = secret::hash_token(&form.device_code);
    let Some(row) = st.store.device_by_hash(&hash).await? else {
        return Ok(oauth_error("invalid_grant", "unknown device code"));
    };
    let now = st.now_ms();
    if row.expires_at <= now {
        return Ok(oauth_error(
            "expired_token",
            "the code expired before it was approved: start again",
        ));
    }
    if row.consumed != 0 {
        return Ok(oauth_error(
            "invalid_grant",
            "this device code was used already",
        ));
    }
    let min_gap = ms(std::time::Duration::from_secs(
        st.settings.device_poll_interval,
    )) / 2;
    let too_fast = row.last_poll.is_some_and(|t| now - t < min_gap);
    st.store.device_polled(&hash, now).await?;
    let Some(user_id) = row.approved_user_id else {
        return Ok(if too_fast {
            oauth_error("slow_down", "polling too often: wait longer between polls")
        } else {
            oauth_error(
                "authorization_pending",
                "waiting for approval in the browser",
            )
        });
    };
    if !st.store.consume_device(&hash).await? {
        return Ok(oauth_error(
            "invalid_grant",
            "this device code was used already",
        ));
    }
    let (session, session_hash) = secret::new_token(TokenKind::Session);
    let expiry = st.settings.session_expiry;
    st.store
        .add_session(&user_id, &session_hash, now, now + ms(expiry))
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(AccessToken {
            access_token: session,
            token_type: "Bearer".into(),
            expires_in: expiry.as_secs(),
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct PageQuery {
    code: Option<String>,
}

/// `GET /device`: the sign-in page.
pub async fn page(State(st): State<Arc<AppState>>, Query(q): Query<PageQuery>) -> Html<String> {
    let code = q
        .code
        .as_deref()
        .and_then(secret::normalise_user_code)
        .unwrap_or_default();
    Html(page_html(&code, None, "", provider_label(&st).as_deref()))
}

/// The identity provider's name for the page's button, when the server signs in through one.
fn provider_label(st: &AppState) -> Option<String> {
    st.settings.oidc.as_ref().map(|p| p.label())
}

#[derive(Deserialize)]
pub struct ApproveForm {
    user_code: String,
    username: String,
    password: String,
}

/// `POST /device`: checks the password and approves the code.
pub async fn approve(
    State(st): State<Arc<AppState>>,
    Extension(client): Extension<ClientAddr>,
    form: Result<Form<ApproveForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page_response(
            &st,
            StatusCode::BAD_REQUEST,
            "",
            "",
            "Fill in the code, your user name and your password.",
        );
    };
    let Some(code) = secret::normalise_user_code(&form.user_code) else {
        return page_response(
            &st,
            StatusCode::BAD_REQUEST,
            "",
            &form.username,
            "That is not a valid code: it has eight letters, as shown on your device.",
        );
    };
    let now_i = Instant::now();
    let user_key = format!("user:{}", form.username);
    let ip_key = format!("ip:{}", client.0.ip());
    for key in [&user_key, &ip_key] {
        if let Err(wait) = st.signin_limiter.check(key, now_i) {
            return page_response(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                &code,
                &form.username,
                &format!(
                    "Too many failed sign-ins. Try again in {} seconds.",
                    wait.as_secs().max(1)
                ),
            );
        }
    }
    let row = match st.store.device_by_user_code(&code).await {
        Ok(r) => r,
        Err(e) => return ApiErr::from(e).into_response(),
    };
    let Some(row) = row.filter(|r| r.expires_at > st.now_ms() && r.consumed == 0) else {
        // A wrong code counts like a wrong password, so codes cannot be guessed at leisure.
        st.signin_limiter.fail(&ip_key, now_i);
        tracing::info!(client = %client.0.ip(), "sign-in with an unknown or expired code");
        return page_response(
            &st,
            StatusCode::BAD_REQUEST,
            "",
            &form.username,
            "That code is unknown or has expired: start signing in again on your device.",
        );
    };
    let user = match st.store.user_by_name(&form.username).await {
        Ok(u) => u,
        Err(e) => return ApiErr::from(e).into_response(),
    };
    // Without such a user, a dummy hash is still checked, so timing does not tell names apart.
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || secret::verify_password(&stored, &password))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        st.signin_limiter.fail(&user_key, now_i);
        st.signin_limiter.fail(&ip_key, now_i);
        tracing::info!(client = %client.0.ip(), "failed sign-in");
        return page_response(
            &st,
            StatusCode::UNAUTHORIZED,
            &code,
            &form.username,
            "Wrong user name or password.",
        );
    };
    st.signin_limiter.clear(&user_key);
    if let Err(e) = st.store.approve_device(&row.code_hash, &user.id).await {
        return ApiErr::from(e).into_response();
    }
    tracing::info!(user = %user.name, "device approved");
    (StatusCode::OK, Html(done_html(&user.name))).into_response()
}

/// An argon2id hash of a random password nobody knows, made once.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| secret::hash_password(&secret::new_id()).unwrap_or_default())
        .clone()
}

/// The sign-in page again with an error; the code and user name stay filled in.
pub(crate) fn page_response(
    st: &AppState,
    status: StatusCode,
    code: &str,
    username: &str,
    error: &str,
) -> Response {
    let label = provider_label(st);
    (
        status,
        Html(page_html(code, Some(error), username, label.as_deref())),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.75rem;\
box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem}\
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}\
#user_code{letter-spacing:.2em;text-transform:uppercase}\
button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem;background:#2457d6;color:#fff;\
border:0;border-radius:.4rem}.error{color:#b00020}.or{margin:1.2rem 0 0;color:#555}";

fn page_html(code: &str, error: Option<&str>, username: &str, provider: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    // With an identity provider, its button comes first (Enter in the code field takes it) and
    // skips the password fields' checks; the password stays for users made with `user add`.
    let (intro, oidc) = match provider {
        Some(p) => (
            "Enter the code your device shows, then continue with your organisation's sign-in.",
            format!(
                r#"<button type="submit" id="oidc" formaction="/oidc/start" formnovalidate>Continue with {}</button>
<p class="or">or with a Pinhole user name and password:</p>"#,
                escape(p)
            ),
        ),
        None => (
            "Enter the code your device shows, then your user name and password.",
            String::new(),
        ),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in to Pinhole</title><style>{STYLE}</style></head><body><main>
<h1>Sign in a device to Pinhole</h1>
<p>{intro}</p>{error}
<form method="post" action="/device">
<label for="user_code">Code</label><input id="user_code" name="user_code" value="{code}" autocomplete="off" required>
{oidc}<label for="username">User name</label><input id="username" name="username" value="{username}" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="approve">Approve device</button></form></main></body></html>"#,
        code = escape(code),
        username = escape(username),
    )
}

pub(crate) fn done_html(user: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Device approved</title><style>{STYLE}</style></head><body><main>
<h1>Device approved</h1><p>Signed in as <b>{}</b>. You can close this page; your device connects by itself.</p>
</main></body></html>"#,
        escape(user)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_people_typed() {
        let p = page_html("<b>", Some("x<script>"), "\"me\"", Some("<id>"));
        assert!(!p.contains("<b>"));
        assert!(!p.contains("x<script>"));
        assert!(p.contains("&quot;me&quot;"));
        assert!(p.contains("Continue with &lt;id&gt;"));
        assert!(!page_html("", None, "", None).contains("oidc"));
    }

    #[test]
    fn dummy_hash_is_a_real_hash_that_matches_nothing_simple() {
        let h = dummy_hash();
        assert!(h.starts_with("$argon2id$"));
        assert!(!secret::verify_password(&h, ""));
    }
}

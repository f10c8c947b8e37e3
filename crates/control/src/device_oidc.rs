//! The device page's way through the identity provider: `POST /oidc/start` checks the device's
//! code and sends the browser to the provider (state, nonce and PKCE kept, the browser marked
//! with a cookie); `GET /oidc/callback` takes that sign-in once, checks it comes back to the same
//! browser, redeems the code, verifies the ID token, finds or creates the user and approves the
//! device. Every refusal is the sign-in page again with the reason in words.

use crate::device::{base_url, done_html, page_response};
use crate::oidc::claims::{self, Refused};
use crate::oidc::store::NewLogin;
use crate::secret;
use crate::state::{ms, AppState, ClientAddr};
use crate::store::UserRow;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a person may spend at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The browser's mark is a cookie named after its sign-in, so that two sign-ins under way in
/// one browser keep their own.
fn cookie_name(state_hash: &str) -> String {
    format!("pinhole_oidc_{}", &state_hash[..state_hash.len().min(16)])
}

#[derive(Deserialize)]
pub struct StartForm {
    user_code: String,
}

/// `POST /oidc/start`: the device page's "Continue with …" button.
pub async fn start(
    State(st): State<Arc<AppState>>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    form: Result<Form<StartForm>, FormRejection>,
) -> Response {
    let Some(provider) = st.settings.oidc.clone() else {
        return page_response(
            &st,
            StatusCode::NOT_FOUND,
            "",
            "",
            "This server does not sign in through an identity provider.",
        );
    };
    // Only this server's own page starts a sign-in: a form on another site posting someone's
    // code here would have a victim already signed in at the provider approve it unawares.
    let base = base_url(&st, &headers);
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if origin.is_some_and(|o| o.trim_end_matches('/') != base) {
        tracing::warn!(origin = ?origin, "a sign-in start from another site was refused");
        return page_response(
            &st,
            StatusCode::FORBIDDEN,
            "",
            "",
            "This sign-in was not started from this server's page: open the link your device \
             shows and start there.",
        );
    }
    let Some(code) = form
        .ok()
        .and_then(|Form(f)| secret::normalise_user_code(&f.user_code))
    else {
        return page_response(
            &st,
            StatusCode::BAD_REQUEST,
            "",
            "",
            "That is not a valid code: it has eight letters, as shown on your device.",
        );
    };
    let now_i = Instant::now();
    let ip_key = format!("ip:{}", client.0.ip());
    if let Err(wait) = st.signin_limiter.check(&ip_key, now_i) {
        let msg = format!(
            "Too many failed sign-ins. Try again in {} seconds.",
            wait.as_secs().max(1)
        );
        return page_response(&st, StatusCode::TOO_MANY_REQUESTS, &code, "", &msg);
    }
    let now = st.now_ms();
    let row = match st.store.device_by_user_code(&code).await {
        Ok(r) => r.filter(|r| r.expires_at > now && r.consumed == 0),
        Err(e) => return crate::state::ApiErr::from(e).into_response(),
    };
    let Some(row) = row else {
        st.signin_limiter.fail(&ip_key, now_i);
        return page_response(
            &st,
            StatusCode::BAD_REQUEST,
            "",
            "",
            "That code is unknown or has expired: start signing in again on your device.",
        );
    };
    let redirect_uri = format!("{base}/oidc/callback");
    let auth = match provider.authorize(&redirect_uri).await {
        Ok(a) => a,
        Err(Refused(msg)) => return page_response(&st, StatusCode::BAD_GATEWAY, &code, "", &msg),
    };
    let browser = format!("{}{}", secret::new_id(), secret::new_id());
    let state_hash = secret::hash_token(&auth.state);
    let login = NewLogin {
        state_hash: &state_hash,
        code_hash: &row.code_hash,
        nonce: &auth.nonce,
        pkce_verifier: &auth.pkce_verifier,
        browser_hash: &secret::hash_token(&browser),
        redirect_uri: &redirect_uri,
        now,
        expires_at: now + ms(LOGIN_TTL),
    };
    if let Err(e) = st.store.add_oidc_login(&login).await {
        return crate::state::ApiErr::from(e).into_response();
    }
    tracing::info!(issuer = %provider.issuer(), "device sign-in sent to the identity provider");
    let secure = if base.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={browser}; Path=/oidc; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(&state_hash),
        LOGIN_TTL.as_secs()
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    match (
        HeaderValue::from_str(&auth.url),
        HeaderValue::from_str(&cookie),
    ) {
        (Ok(loc), Ok(c)) => {
            h.insert(header::LOCATION, loc);
            h.insert(header::SET_COOKIE, c);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => page_response(
            &st,
            StatusCode::BAD_GATEWAY,
            &code,
            "",
            "The identity provider's sign-in address cannot be used in a redirect.",
        ),
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The browser's mark for the sign-in with this state hash, if it sent one.
fn browser_cookie(headers: &HeaderMap, state_hash: &str) -> Option<String> {
    let name = cookie_name(state_hash);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `GET /oidc/callback`: the provider sends the person back here.
pub async fn callback(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match finish(&st, &headers, q).await {
        Ok(user) => (StatusCode::OK, Html(done_html(&user.name))).into_response(),
        Err((status, Refused(msg))) => {
            tracing::info!("a sign-in through the identity provider was refused: {msg}");
            page_response(&st, status, "", "", &msg)
        }
    }
}

type Refusal = (StatusCode, Refused);

fn bad(msg: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, Refused(msg.to_string()))
}

fn db(e: crate::store::StoreError) -> Refusal {
    tracing::error!("{e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Refused("The server could not record the sign-in: try again.".into()),
    )
}

async fn finish(st: &AppState, headers: &HeaderMap, q: CallbackQuery) -> Result<UserRow, Refusal> {
    let provider = st
        .settings
        .oidc
        .clone()
        .ok_or_else(|| bad("This server does not sign in through an identity provider."))?;
    let state_hash = secret::hash_token(q.state.as_deref().unwrap_or_default());
    let login = st
        .store
        .take_oidc_login(&state_hash)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            bad("This sign-in link is unknown or was used already: start signing in again on your device.")
        })?;
    let now = st.now_ms();
    if login.expires_at <= now {
        return Err(bad(
            "The sign-in took too long at the identity provider: start again on your device.",
        ));
    }
    let same_browser = browser_cookie(headers, &state_hash)
        .is_some_and(|b| secret::hash_token(&b) == login.browser_hash);
    if !same_browser {
        return Err(bad(
            "This sign-in was started in another browser (or its cookie was refused): open the \
             link your device shows in this browser and start again.",
        ));
    }
    if let Some(error) = &q.error {
        let why = q
            .error_description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err((
            StatusCode::FORBIDDEN,
            Refused(format!(
                "The identity provider refused the sign-in ({error}{why})."
            )),
        ));
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("The identity provider sent the browser back without a code."))?;
    let device = st
        .store
        .device_by_hash(&login.code_hash)
        .await
        .map_err(db)?
        .filter(|d| d.expires_at > now && d.consumed == 0)
        .ok_or_else(|| {
            bad("The code on your device has expired or was used: start signing in again there.")
        })?;
    let forbidden = |r: Refused| (StatusCode::FORBIDDEN, r);
    let claims = provider
        .redeem(
            code,
            &login.redirect_uri,
            &login.pkce_verifier,
            &login.nonce,
        )
        .await
        .map_err(forbidden)?;
    let id = claims::identity(&claims, provider.mapping()).map_err(forbidden)?;
    let user = user_for(st, provider.issuer(), &id, now).await?;
    let regrouped = st
        .store
        .set_idp_groups(&user, &id.groups, now)
        .await
        .map_err(db)?;
    if regrouped && st.hub.is_loaded(&user.account_id) {
        // This instance applies the new membership before the device can register; others
        // hear of it through the policy's changed mark.
        let policy = st.policy_of(&user.account_id).await.map_err(db)?;
        st.hub.set_policy(&user.account_id, policy);
    }
    st.store
        .approve_device(&device.code_hash, &user.id)
        .await
        .map_err(db)?;
    tracing::info!(user = %user.name, account = %user.account_name, "device approved through the identity provider");
    Ok(user)
}

/// The user the provider vouches for, created at their first sign-in in the account the claims
/// name.
async fn user_for(
    st: &AppState,
    issuer: &str,
    id: &claims::Identity,
    now: i64,
) -> Result<UserRow, Refusal> {
    if let Some(u) = st
        .store
        .user_by_subject(issuer, &id.subject)
        .await
        .map_err(db)?
    {
        return Ok(u);
    }
    let account = st.store.account(&id.account, now).await.map_err(db)?;
    match st
        .store
        .add_oidc_user(&account.id, &id.email, issuer, &id.subject, now)
        .await
    {
        Ok(()) => {
            tracing::info!(user = %id.email, account = %account.name, "a user signed in for the first time through the identity provider");
        }
        Err(crate::store::StoreError::Conflict(m)) => {
            return Err((
                StatusCode::CONFLICT,
                Refused(format!(
                    "{m}: an operator can remove that user (or rename it) before you sign in \
                     with the identity provider."
                )),
            ))
        }
        Err(e) => return Err(db(e)),
    }
    st.store
        .user_by_subject(issuer, &id.subject)
        .await
        .map_err(db)?
        .ok_or_else(|| db(crate::store::StoreError::NotFound("the new user".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; pinhole_oidc_0123456789abcdef=xyz; pinhole_oidc_ffff=2"),
        );
        let hash = "0123456789abcdef0123";
        assert_eq!(browser_cookie(&h, hash).as_deref(), Some("xyz"));
        assert_eq!(browser_cookie(&h, "ffffffffffffffffff"), None);
    }
}

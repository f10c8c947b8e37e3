//! Sign-in with the organisation's identity provider (OpenID Connect): the provider's discovery
//! document and keys (fetched when first needed, kept ten minutes), the authorization code flow
//! with PKCE, state and nonce, and the ID token's signature and claims verified with the
//! `openidconnect` crate on this server's clock. Who the verified claims name: [`claims`]; what
//! is kept: [`store`]; the device page's handlers: `crate::device_oidc`.

pub mod claims;
pub mod store;

use crate::clock::Clock;
use claims::Refused;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// The client as discovery leaves it: authorization and token endpoints known.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long discovery (metadata and keys) is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);
/// How long any request to the provider may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `serve --oidc-*`: the provider and this server's registration with it.
#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for beyond `openid`, `email` and `profile` (e.g. `groups`).
    pub extra_scopes: Vec<String>,
    pub mapping: claims::Mapping,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"(hidden)")
            .field("extra_scopes", &self.extra_scopes)
            .field("mapping", &self.mapping)
            .finish()
    }
}

/// Where to send the browser, and what to remember until it comes back.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The identity provider as this server uses it.
#[derive(Debug)]
pub struct Provider {
    config: OidcConfig,
    http: reqwest::Client,
    clock: Clock,
    discovered: tokio::sync::Mutex<Option<(Instant, Client)>>,
}

/// The first line of an error and its causes, for people.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Provider {
    pub fn new(config: OidcConfig, clock: Clock) -> Result<Provider, reqwest::Error> {
        // No redirects: a provider's endpoints answer themselves (and cannot bounce this
        // server's requests elsewhere).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Provider {
            config,
            http,
            clock,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn mapping(&self) -> &claims::Mapping {
        &self.config.mapping
    }

    /// The provider's host, for the page's button ("Continue with login.example.com").
    pub fn label(&self) -> String {
        url::Url::parse(&self.config.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| self.config.issuer.clone())
    }

    /// The discovered client, fetched again when older than [`DISCOVERY_TTL`] or `fresh`.
    async fn client(&self, fresh: bool) -> Result<Client, Refused> {
        let mut slot = self.discovered.lock().await;
        if let Some((at, c)) = slot.as_ref() {
            if !fresh && at.elapsed() < DISCOVERY_TTL {
                return Ok(c.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| {
            Refused(format!(
                "This server's identity provider setting {:?} is not a URL ({e}).",
                self.config.issuer
            ))
        })?;
        let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| self.discovery_refused(&e))?;
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.clone())),
        );
        *slot = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    fn discovery_refused<E: std::error::Error + 'static>(
        &self,
        e: &openidconnect::DiscoveryError<E>,
    ) -> Refused {
        let issuer = &self.config.issuer;
        tracing::warn!(issuer = %issuer, "OIDC discovery failed: {}", chain(e));
        Refused(match e {
            openidconnect::DiscoveryError::Validation(m) if m.contains("issuer") => format!(
                "The identity provider at {issuer} gives another issuer in its discovery document \
                 ({m}): this server's --oidc-issuer must be exactly the provider's issuer."
            ),
            openidconnect::DiscoveryError::Request(_) => format!(
                "The identity provider at {issuer} cannot be reached ({}). Try again later.",
                chain(e)
            ),
            _ => format!(
                "The identity provider at {issuer} did not give a usable discovery document ({}).",
                chain(e)
            ),
        })
    }

    /// Where to send the browser for a sign-in that comes back to `redirect_uri`.
    pub async fn authorize(&self, redirect_uri: &str) -> Result<Authorization, Refused> {
        let client = self.client(false).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|e| {
            Refused(format!(
                "This server's own address {redirect_uri:?} is not a URL ({e})."
            ))
        })?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = client.set_redirect_uri(redirect);
        let mut req = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        for s in &self.config.extra_scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Trades the provider's code for tokens and returns the ID token's verified claims (with
    /// what the userinfo endpoint adds where the ID token is silent).
    pub async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, Refused> {
        let client = self.client(false).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|e| {
            Refused(format!(
                "This server's own address {redirect_uri:?} is not a URL ({e})."
            ))
        })?;
        let client = client.set_redirect_uri(redirect);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                Refused(format!(
                    "The identity provider has no token endpoint ({e})."
                ))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_refused(&e))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| Refused("The identity provider answered without an ID token.".into()))?;
        let clock = self.clock.clone();
        let verify = |c: &Client| {
            let clock = clock.clone();
            let verifier = c.id_token_verifier().set_time_fn(move || {
                chrono::DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_default()
            });
            id_token
                .claims(&verifier, &Nonce::new(nonce.to_string()))
                .map(|_| ())
        };
        let verified = match verify(&client) {
            // Keys rotate: a signature that fails with the kept keys is tried with fresh ones.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                verify(&self.client(true).await?)
            }
            other => other,
        };
        verified.map_err(|e| self.claims_refused(&e))?;
        // The signature covers these exact bytes: the claims the crate does not model (groups,
        // the account claim) are read from the verified payload.
        let mut claims = payload(&id_token.to_string())?;
        let wanted = ["email", "email_verified", "groups"]
            .into_iter()
            .chain(self.config.mapping.account_claim.as_deref());
        if wanted.clone().any(|k| !claims.contains_key(k)) {
            if let Some(info) = self
                .userinfo(&client, token.access_token().secret())
                .await?
            {
                if info.get("sub") != claims.get("sub") {
                    return Err(Refused(
                        "The identity provider's userinfo answer is about someone else than its \
                         ID token."
                            .into(),
                    ));
                }
                for k in wanted {
                    if let (false, Some(v)) = (claims.contains_key(k), info.get(k)) {
                        claims.insert(k.to_string(), v.clone());
                    }
                }
            }
        }
        Ok(claims)
    }

    /// The userinfo endpoint's claims (JSON answers only); none without such an endpoint.
    async fn userinfo(
        &self,
        client: &Client,
        access_token: &str,
    ) -> Result<Option<Map<String, Value>>, Refused> {
        let Some(endpoint) = client.user_info_url() else {
            return Ok(None);
        };
        let r = self
            .http
            .get(endpoint.url().clone())
            .bearer_auth(access_token)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        let body = match r {
            Ok(r) => r.json::<Value>().await,
            Err(e) => Err(e),
        };
        match body {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(Refused(
                "The identity provider's userinfo answer is not a JSON object.".into(),
            )),
            Err(e) => Err(Refused(format!(
                "The identity provider's userinfo endpoint failed ({}).",
                chain(&e)
            ))),
        }
    }

    fn token_refused<RE: std::error::Error + 'static>(
        &self,
        e: &openidconnect::RequestTokenError<
            RE,
            openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
        >,
    ) -> Refused {
        tracing::info!("the OIDC code exchange failed: {}", chain(e));
        Refused(match e {
            openidconnect::RequestTokenError::ServerResponse(r) => {
                let what = r.error().as_ref();
                let why = r
                    .error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                if what == "invalid_grant" {
                    format!(
                        "The identity provider did not accept the sign-in code ({what}{why}): it \
                         expired or was used already. Start again on your device."
                    )
                } else {
                    format!("The identity provider refused the sign-in ({what}{why}).")
                }
            }
            openidconnect::RequestTokenError::Request(_) => format!(
                "The identity provider cannot be reached ({}). Try again later.",
                chain(e)
            ),
            _ => format!(
                "The identity provider's token answer is unusable ({}).",
                chain(e)
            ),
        })
    }

    fn claims_refused(&self, e: &openidconnect::ClaimsVerificationError) -> Refused {
        use openidconnect::ClaimsVerificationError as C;
        tracing::warn!("an ID token was refused: {}", chain(e));
        Refused(match e {
            C::Expired(_) => {
                "The identity provider's ID token has expired: start again on your device (and \
                 check that this server's clock is right)."
                    .into()
            }
            C::SignatureVerification(_) => {
                "The ID token's signature does not verify with the identity provider's keys: \
                 the sign-in is refused."
                    .into()
            }
            C::InvalidIssuer(m) => format!(
                "The ID token was issued by someone else than {} ({m}).",
                self.config.issuer
            ),
            C::InvalidAudience(_) => {
                "The ID token was issued for another application than this Pinhole server.".into()
            }
            C::InvalidNonce(_) => {
                "The ID token belongs to another sign-in (its nonce does not match).".into()
            }
            other => format!("The ID token is not valid ({}).", chain(other)),
        })
    }
}

/// The claims of a compact JWS (its middle part).
fn payload(jwt: &str) -> Result<Map<String, Value>, Refused> {
    use base64::Engine as _;
    let bad = || Refused("The identity provider's ID token cannot be read.".into());
    let part = jwt.split('.').nth(1).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| bad())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_of_a_compact_token_is_read_and_junk_is_refused() {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","groups":["dev"]}"#);
        let m = payload(&format!("e30.{body}.sig")).unwrap();
        assert_eq!(m["groups"][0], "dev");
        assert!(payload("only-one-part").is_err());
        assert!(payload("a.!!!.c").is_err());
        assert!(payload("a.W10.c").is_err(), "an array is no claims object");
    }

    #[test]
    fn the_client_secret_never_shows_in_debug_output() {
        let c = OidcConfig {
            issuer: "https://id.example".into(),
            client_id: "pinhole".into(),
            client_secret: "s3cr3t-value".into(),
            extra_scopes: vec![],
            mapping: claims::Mapping::default(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}

//! Sign-in through a real OpenID provider: the npm package `oidc-provider` (a certified
//! implementation, `tests/oidc-provider/provider.mjs`) started by the test on loopback, and
//! pinhole-control in-process, on SQLite and on PostgreSQL. A browser is played by an HTTP client
//! with cookies: the device page's button, the provider's sign-in form, the way back.

mod common;

use common::pg::Postgres;
use pinhole_control::oidc::claims::Mapping;
use pinhole_control::oidc::{OidcConfig, Provider};
use pinhole_control::{admin, policy, Server, Settings, Store};
use pinhole_control_client::{ControlClient, DevicePoll};
use pinhole_proto::control::{MapMessage, NodeInfo};
use pinhole_proto::key::PrivateKey;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "a-test-client-secret-of-some-length";

/// The provider's node process, stopped when dropped.
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Idp {
    /// Starts the provider on `port`; none (loudly, and a failure under `cargo xtask test`)
    /// without node or the package.
    fn start(port: u16, redirect_uri: &str) -> Option<Idp> {
        let dir = provider_dir();
        if !dir.join("node_modules/oidc-provider").is_dir() {
            let _ = pinhole_testkit::skip(
                "sign-in through oidc-provider",
                "its npm package is not installed: `npm ci` in crates/control/tests/oidc-provider \
                 (`cargo xtask test` does)",
            );
            return None;
        }
        let mut child = match Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_CLIENT_SECRET", SECRET)
            .env("OIDC_REDIRECT_URIS", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let _ = pinhole_testkit::skip(
                    "sign-in through oidc-provider",
                    &format!("no node: {e}"),
                );
                return None;
            }
        };
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("the provider's first line");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the provider did not start ({e}): {line:?}"));
        eprintln!("counterpart: oidc-provider {}", v["version"]);
        Some(Idp {
            child,
            issuer: v["issuer"].as_str().expect("an issuer").to_string(),
        })
    }
}

fn provider(issuer: &str, settings: &Settings) -> Arc<Provider> {
    let cfg = OidcConfig {
        issuer: issuer.to_string(),
        client_id: "pinhole".into(),
        client_secret: SECRET.into(),
        extra_scopes: vec!["groups".into()],
        mapping: Mapping::default(),
    };
    Arc::new(Provider::new(cfg, settings.clock.clone()).expect("an HTTP client"))
}

async fn server(db: &str, issuer: &str) -> (Server, Settings) {
    let mut settings = Settings::default();
    settings.oidc = Some(provider(issuer, &settings));
    let store = Store::open(db).await.expect("open store");
    let server = Server::start(
        store,
        "127.0.0.1:0".parse().unwrap(),
        None,
        settings.clone(),
    )
    .await
    .expect("start server");
    (server, settings)
}

/// A browser: keeps cookies, follows redirects but stops before pinhole-control's callback
/// (so that the test can look at, replay or delay it).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|a| {
            if a.url().path() == "/oidc/callback" {
                a.stop()
            } else {
                a.follow()
            }
        }))
        .build()
        .unwrap()
}

/// Presses "Continue with …" on the device page: the answer is the provider's sign-in page
/// (or pinhole-control's page with a refusal).
async fn start(web: &reqwest::Client, base: &str, user_code: &str) -> (u16, String, String) {
    let r = web
        .post(format!("{base}/oidc/start"))
        .form(&[("user_code", user_code)])
        .send()
        .await
        .unwrap();
    let url = r.url().to_string();
    (r.status().as_u16(), url, r.text().await.unwrap())
}

/// Signs in at the provider's page; the callback URL the provider sends the browser to.
async fn sign_in_at_idp(web: &reqwest::Client, page_url: &str, page: &str, login: &str) -> String {
    let action = page
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("a form on the provider's page: {page}"));
    let target = reqwest::Url::parse(page_url).unwrap().join(action).unwrap();
    let r = web
        .post(target)
        .form(&[("login", login), ("password", "any password")])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection(),
        "{} {:?}",
        r.status(),
        r.text().await
    );
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn visit(web: &reqwest::Client, url: &str) -> (u16, String) {
    let r = web.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A device code, taken through the provider as `login` up to the way back.
async fn through_idp(
    client: &ControlClient,
    base: &str,
    login: &str,
) -> (String, String, reqwest::Client) {
    let code = client.device_code().await.unwrap();
    let web = browser();
    let (status, url, page) = start(&web, base, &code.user_code).await;
    assert_eq!(status, 200, "the provider's sign-in page: {page}");
    assert!(page.contains("Example IdP"), "{page}");
    let back = sign_in_at_idp(&web, &url, &page, login).await;
    assert!(
        back.starts_with(&format!("{base}/oidc/callback?")),
        "{back}"
    );
    (code.device_code, back, web)
}

async fn poll(client: &ControlClient, device_code: &str) -> DevicePoll {
    client.device_token(device_code).await.unwrap()
}

fn fresh_key() -> PrivateKey {
    PrivateKey::from_bytes(rand::random())
}

fn info(host: &str) -> NodeInfo {
    NodeInfo {
        disco_key: fresh_key().public_key(),
        hostname: host.into(),
        os: "linux".into(),
        tags: Vec::new(),
        advertised_routes: Vec::new(),
    }
}

async fn full_map_names(client: &ControlClient, node_token: &str) -> Vec<String> {
    let mut stream = client.map(node_token).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Ok(Some(MapMessage::Full { peers, .. }))) => {
            let mut names: Vec<String> = peers.into_iter().map(|p| p.name).collect();
            names.sort();
            names
        }
        other => panic!("no full map: {other:?}"),
    }
}

async fn sign_in_through_the_provider(db: &str) {
    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let (srv, settings) = server(db, &issuer).await;
    let base = format!("http://{}", srv.local_addr());
    let Some(idp) = Idp::start(idp_port, &format!("{base}/oidc/callback")) else {
        return;
    };
    assert_eq!(idp.issuer, issuer);
    let client = ControlClient::new(&base, None).unwrap();
    let store = Store::open(db).await.unwrap();

    // The device page offers the provider.
    let page = reqwest::get(format!("{base}/device"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Continue with 127.0.0.1"), "{page}");

    // The policy of the account people at example.com land in: the provider's groups feed it.
    let key = admin::create_auth_key(&store, "example.com", false, None)
        .await
        .unwrap();
    policy::set(
        &store,
        "example.com",
        r#"{ "groups": { "group:dev": [], "group:ops": [] }, "tagOwners": { "tag:server": [] },
             "acls": [ { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22"] } ] }"#,
    )
    .await
    .unwrap();
    policy::own_auth_key(&store, &key, &["tag:server".to_string()], None)
        .await
        .unwrap();
    client
        .register(&key, &fresh_key(), &info("server"))
        .await
        .unwrap();

    // Alice: first sign-in creates her in account example.com; the device gets its session.
    let (alice_code, back, web) = through_idp(&client, &base, "alice@example.com").await;
    let (status, body) = visit(&web, &back).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Device approved") && body.contains("alice@example.com"),
        "{body}"
    );
    let DevicePoll::Approved(session) = poll(&client, &alice_code).await else {
        panic!("alice's device is not approved");
    };
    let alice = store
        .user_by_name("alice@example.com")
        .await
        .unwrap()
        .expect("alice exists");
    assert_eq!(alice.account_name, "example.com");
    let reg = client
        .register(&session.access_token, &fresh_key(), &info("alice-laptop"))
        .await
        .unwrap();
    assert_eq!(
        full_map_names(&client, &reg.node_token).await,
        vec!["server".to_string()],
        "group:dev (from the provider) reaches the server"
    );

    // The same way back again: refused, nothing changes.
    let (status, body) = visit(&web, &back).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown or was used already"), "{body}");

    // Bob (group ops): signed in, but the policy hides the server from him.
    let (bob_code, back, web) = through_idp(&client, &base, "bob@example.com").await;
    assert_eq!(visit(&web, &back).await.0, 200);
    let DevicePoll::Approved(bob) = poll(&client, &bob_code).await else {
        panic!("bob's device is not approved");
    };
    let reg = client
        .register(&bob.access_token, &fresh_key(), &info("bob-laptop"))
        .await
        .unwrap();
    assert!(
        full_map_names(&client, &reg.node_token).await.is_empty(),
        "bob is not in group:dev"
    );

    // A code the provider gave for another sign-in (used already): the provider refuses it.
    let old_code = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .unwrap();
    let (device, back, web) = through_idp(&client, &base, "alice@example.com").await;
    let mut replay = reqwest::Url::parse(&back).unwrap();
    let state = replay
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    replay
        .query_pairs_mut()
        .clear()
        .append_pair("code", &old_code)
        .append_pair("state", &state);
    let (status, body) = visit(&web, replay.as_str()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("did not accept the sign-in code"), "{body}");
    assert!(matches!(poll(&client, &device).await, DevicePoll::Pending));

    // The way back in another browser (no cookie from the start): refused.
    let (_, back, _) = through_idp(&client, &base, "alice@example.com").await;
    let (status, body) = visit(&browser(), &back).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("started in another browser"), "{body}");

    // An email the provider has not verified; a forged signature.
    for (login, words) in [
        (
            "carol@example.com",
            "has not verified the email address carol@example.com",
        ),
        ("forger@example.com", "signature does not verify"),
    ] {
        let (device, back, web) = through_idp(&client, &base, login).await;
        let (status, body) = visit(&web, &back).await;
        assert_eq!(status, 403, "{login}: {body}");
        assert!(body.contains(words), "{login}: {body}");
        assert!(
            matches!(poll(&client, &device).await, DevicePoll::Pending),
            "{login}"
        );
    }
    assert!(store
        .user_by_name("carol@example.com")
        .await
        .unwrap()
        .is_none());

    // An ID token that expired before it came back (this server's clock two minutes on; the
    // provider's ID tokens last one).
    let (device, back, web) = through_idp(&client, &base, "alice@example.com").await;
    settings.clock.advance(Duration::from_secs(120));
    let (status, body) = visit(&web, &back).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ID token has expired"), "{body}");
    assert!(matches!(poll(&client, &device).await, DevicePoll::Pending));

    // A form on another site posting a code here is refused before the provider is involved.
    let code = client.device_code().await.unwrap();
    let r = browser()
        .post(format!("{base}/oidc/start"))
        .header("origin", "https://evil.example")
        .form(&[("user_code", code.user_code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("was not started from this server"));

    // An unknown code never reaches the provider.
    let (status, _, body) = start(&browser(), &base, "BCDF-GHJK").await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown or has expired"), "{body}");

    // A server configured with another issuer than the provider's own, and one whose provider
    // is down: refused in words, and the server goes on serving.
    let (wrong, _) = server(db, &format!("http://localhost:{idp_port}")).await;
    let wrong_base = format!("http://{}", wrong.local_addr());
    let code = ControlClient::new(&wrong_base, None)
        .unwrap()
        .device_code()
        .await
        .unwrap();
    let (status, _, body) = start(&browser(), &wrong_base, &code.user_code).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("gives another issuer"), "{body}");
    drop(idp);
    let (dead, _) = server(db, &format!("http://127.0.0.1:{}", free_port())).await;
    let dead_base = format!("http://{}", dead.local_addr());
    let code = ControlClient::new(&dead_base, None)
        .unwrap()
        .device_code()
        .await
        .unwrap();
    let (status, _, body) = start(&browser(), &dead_base, &code.user_code).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
    assert!(reqwest::get(format!("{dead_base}/healthz"))
        .await
        .unwrap()
        .status()
        .is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_provider_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("pinhole-oidc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    sign_in_through_the_provider(&format!("sqlite://{}", dir.join("control.db").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_provider_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    sign_in_through_the_provider(&pg.database("oidc")).await;
    drop(pg);
}

//! pinhole-control's command line: `serve`, and the operator's commands on the same database.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pinhole_control::admin::{self, DEFAULT_ACCOUNT};
use pinhole_control::{duration, Server, Settings, Store, TlsFiles};
use pinhole_proto::control::{Relay, RelayMap, RelayRegion};
use pinhole_relay::{StunConfig, StunServer};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The Pinhole coordination server.
#[derive(Debug, Parser)]
#[command(name = "pinhole-control", version, about)]
struct Cli {
    /// Database: sqlite://PATH (embedded, the default) or postgres://USER@HOST/DB.
    #[arg(long, env = "PINHOLE_DB", global = true, default_value_t = default_db())]
    db: String,
    /// Log filter (tracing's syntax), overridden by PINHOLE_LOG.
    #[arg(long, default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve(Box<ServeArgs>),
    /// Manages the people who sign in.
    #[command(subcommand)]
    User(UserCmd),
    /// Manages auth keys for machines that join without a person.
    #[command(subcommand)]
    Authkey(AuthkeyCmd),
    /// Lists, renames and removes nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Sets an account's options (its DNS suffix).
    #[command(subcommand)]
    Account(AccountCmd),
    /// Shows, checks and sets an account's access policy (Tailscale/Headscale format, HuJSON).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Lists, approves and revokes the routes nodes offer (subnets, exit nodes).
    #[command(subcommand)]
    Route(RouteCmd),
    /// Signs people out.
    #[command(subcommand)]
    Session(SessionCmd),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (e.g. 0.0.0.0:443).
    #[arg(long)]
    listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP: only for labs and tests, where nothing else is on the network.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_http: bool,
    /// Relay map served to nodes (JSON: {"regions":[{"code","name","relays":[{"url","stun"}]}]}).
    /// Without one, nodes are given the embedded service as region "local".
    #[arg(long, value_name = "FILE")]
    relay_map: Option<PathBuf>,
    /// UDP address of the embedded STUN service.
    #[arg(long, default_value = "0.0.0.0:3478")]
    stun_listen: SocketAddr,
    /// Do not run the embedded STUN service.
    #[arg(long)]
    no_stun: bool,
    /// Do not run the embedded packet relay (`/relay` on the listen address).
    #[arg(long)]
    no_relay: bool,
    /// Serve the embedded relay on an address of its own (e.g. 0.0.0.0:8443, same TLS as the
    /// API) instead of the listen address; the default relay map names this port.
    #[arg(long, conflicts_with = "no_relay")]
    relay_listen: Option<SocketAddr>,
    /// Serve the embedded relay's Prometheus metrics (`/metrics`, plain HTTP) on this address,
    /// e.g. 127.0.0.1:9090; they are served nowhere else.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_relay")]
    metrics_listen: Option<SocketAddr>,
    /// A file holding the secret that separate relays (`pinhole-relay --control-url`) present to
    /// ask which nodes may use them; without it, only the embedded relay serves.
    #[arg(long, value_name = "FILE")]
    relay_secret_file: Option<PathBuf>,
    /// A load balancer or reverse proxy in front of this server (an address or CIDR; repeat for
    /// several): requests from it are counted under the client address it names in
    /// X-Forwarded-For. Nobody else's X-Forwarded-For is believed.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = proxy_net)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The URL people's browsers reach this server at (for the sign-in link).
    #[arg(long)]
    public_url: Option<String>,
    /// How long a node stays signed in (e.g. 180d, or never).
    #[arg(long, default_value = "180d", value_parser = lifetime)]
    node_expiry: Lifetime,
    /// How long a person's sign-in session lasts.
    #[arg(long, default_value = "30d", value_parser = lifetime)]
    session_expiry: Lifetime,
    /// Sign people in through this OpenID Connect provider: its issuer URL, exactly as its
    /// discovery document gives it (e.g. https://login.example.com/realms/acme). Register
    /// PUBLIC_URL/oidc/callback there as the redirect URI.
    #[arg(long, value_name = "URL", requires_all = ["oidc_client_id", "oidc_client_secret_file"])]
    oidc_issuer: Option<String>,
    /// This server's client id at the provider.
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// A file holding the client secret (its first line).
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    oidc_client_secret_file: Option<PathBuf>,
    /// The ID token claim whose value names a person's account; without it, their email's
    /// domain does (alice@example.com joins the account example.com).
    #[arg(long, value_name = "CLAIM", requires = "oidc_issuer")]
    oidc_account_claim: Option<String>,
    /// Only people with an email at this domain may sign in through the provider (repeat for
    /// several); without it, anyone the provider vouches for.
    #[arg(
        long = "oidc-allowed-domain",
        value_name = "DOMAIN",
        requires = "oidc_issuer"
    )]
    oidc_allowed_domains: Vec<String>,
    /// A scope to ask for besides openid, email and profile (e.g. groups; repeat for several).
    #[arg(long = "oidc-scope", value_name = "SCOPE", requires = "oidc_issuer")]
    oidc_scopes: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Adds a user; the password is read from stdin (one line).
    Add {
        name: String,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
    /// Lists users.
    List,
}

#[derive(Debug, Subcommand)]
enum AuthkeyCmd {
    /// Creates an auth key and prints it (only the key, once).
    Create {
        /// Usable by any number of machines (default: one).
        #[arg(long)]
        reusable: bool,
        /// Lifetime (e.g. 1h, 90d, never).
        #[arg(long, default_value = "90d", value_parser = lifetime)]
        expiry: Lifetime,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
        /// Tags the nodes it registers get (comma-separated, e.g. tag:server); such nodes belong
        /// to their tags, not to a person.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// The person whose nodes it registers (a user of the account): the policy's rules
        /// for that user and their groups apply to those nodes.
        #[arg(long)]
        user: Option<String>,
    },
    /// Lists auth keys (never the keys themselves: only their ids).
    List,
    /// Revokes an auth key by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Lists nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a node by id or name; it has to sign in again.
    Remove { node: String },
    /// Renames a node (its DNS name follows); the name must be a free DNS label.
    Rename { node: String, name: String },
}

#[derive(Debug, Subcommand)]
enum RouteCmd {
    /// Lists every node's offered routes and whether they are approved.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approves routes of a node (by id or name): CIDRs, `all` (everything it offers) or `exit`
    /// (0.0.0.0/0 and ::/0: an exit node). Its peers that accept routes use them at once.
    Approve {
        node: String,
        #[arg(required = true)]
        routes: Vec<String>,
    },
    /// Takes approvals back (CIDRs, `all` or `exit`); peers stop using those routes.
    Revoke {
        node: String,
        #[arg(required = true)]
        routes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCmd {
    /// Changes an account's options.
    Set {
        /// The account.
        name: String,
        /// The DNS suffix of the account's names (`nas.SUFFIX`); `pinhole.internal` by default.
        #[arg(long)]
        dns_suffix: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Prints the account's policy as it was written.
    Get {
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
    /// Checks a policy file and runs its tests, without setting it.
    Check { file: PathBuf },
    /// Sets the account's policy; one that does not read or fails its tests is refused and
    /// the old one stays. Every node follows within a second.
    Set {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
    /// Removes the account's policy: everyone reaches everyone again.
    Remove {
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// Revokes every session of a user.
    Revoke {
        #[arg(long)]
        user: String,
    },
}

/// A duration, or none for "never".
#[derive(Debug, Clone, Copy)]
struct Lifetime(Option<Duration>);

fn lifetime(text: &str) -> Result<Lifetime, String> {
    duration::parse(text).map(Lifetime)
}

fn default_db() -> String {
    let dir = if cfg!(target_os = "linux") && is_root() {
        PathBuf::from("/var/lib/pinhole-control")
    } else {
        directories::ProjectDirs::from("", "", "pinhole-control")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."))
    };
    format!("sqlite://{}", dir.join("control.db").display())
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pinhole-control: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PINHOLE_LOG").unwrap_or_else(|_| EnvFilter::new(&cli.log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command(cli))
}

async fn open(db: &str) -> Result<Store> {
    if let Some(path) = db.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = PathBuf::from(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    Store::open(db)
        .await
        .with_context(|| format!("cannot open the database {}", redact(db)))
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:…{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn command(cli: Cli) -> Result<()> {
    let store = open(&cli.db).await?;
    match cli.command {
        Command::Serve(a) => serve(store, *a).await,
        Command::User(UserCmd::Add { name, account }) => {
            let mut password = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.lines().next().unwrap_or("");
            admin::add_user(&store, &account, &name, password).await?;
            eprintln!("user {name} added to account {account}");
            Ok(())
        }
        Command::User(UserCmd::List) => {
            print!("{}", admin::list_users(&store).await?);
            Ok(())
        }
        Command::Authkey(AuthkeyCmd::Create {
            reusable,
            expiry,
            account,
            tags,
            user,
        }) => {
            let key = admin::create_auth_key(&store, &account, reusable, expiry.0).await?;
            if !tags.is_empty() || user.is_some() {
                pinhole_control::policy::own_auth_key(&store, &key, &tags, user.as_deref()).await?;
            }
            println!("{key}");
            Ok(())
        }
        Command::Policy(cmd) => policy_command(&store, cmd).await,
        Command::Authkey(AuthkeyCmd::List) => {
            print!("{}", admin::list_auth_keys(&store).await?);
            Ok(())
        }
        Command::Authkey(AuthkeyCmd::Revoke { id }) => {
            store
                .revoke_auth_key(&id, pinhole_control::state::now_ms())
                .await?;
            eprintln!("auth key {id} revoked");
            Ok(())
        }
        Command::Node(NodeCmd::List { json }) => {
            print!("{}", admin::list_nodes(&store, json).await?);
            Ok(())
        }
        Command::Node(NodeCmd::Remove { node }) => {
            let name = admin::remove_node(&store, &node).await?;
            eprintln!("node {name} removed");
            Ok(())
        }
        Command::Node(NodeCmd::Rename { node, name }) => {
            let (old, new) = pinhole_control::names::rename_node(&store, &node, &name).await?;
            eprintln!("node {old} renamed to {new}");
            Ok(())
        }
        Command::Route(RouteCmd::List { json }) => {
            print!("{}", pinhole_control::routes::list(&store, json).await?);
            Ok(())
        }
        Command::Route(RouteCmd::Approve { node, routes }) => {
            eprintln!(
                "{}",
                pinhole_control::routes::approve(&store, &node, &routes).await?
            );
            Ok(())
        }
        Command::Route(RouteCmd::Revoke { node, routes }) => {
            eprintln!(
                "{}",
                pinhole_control::routes::revoke(&store, &node, &routes).await?
            );
            Ok(())
        }
        Command::Account(AccountCmd::Set { name, dns_suffix }) => {
            let suffix = pinhole_control::names::set_dns_suffix(&store, &name, &dns_suffix).await?;
            eprintln!("account {name}: DNS suffix {suffix}");
            Ok(())
        }
        Command::Session(SessionCmd::Revoke { user }) => {
            let n = admin::revoke_sessions(&store, &user).await?;
            eprintln!("{n} session(s) of {user} revoked");
            Ok(())
        }
    }
}

async fn policy_command(store: &Store, cmd: PolicyCmd) -> Result<()> {
    use pinhole_control::policy;
    let read = |file: &PathBuf| {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    };
    match cmd {
        PolicyCmd::Get { account } => match policy::get(store, &account).await? {
            Some(text) => print!("{text}"),
            None => eprintln!("account {account} has no policy: everyone reaches everyone"),
        },
        PolicyCmd::Check { file } => {
            policy::check(&read(&file)?)?;
            eprintln!("{}: the policy reads and its tests pass", file.display());
        }
        PolicyCmd::Set { file, account } => {
            for w in policy::set(store, &account, &read(&file)?).await? {
                eprintln!("warning: {w}");
            }
            eprintln!("account {account}: policy set from {}", file.display());
        }
        PolicyCmd::Remove { account } => {
            policy::remove(store, &account).await?;
            eprintln!("account {account}: policy removed, everyone reaches everyone");
        }
    }
    Ok(())
}

async fn serve(store: Store, a: ServeArgs) -> Result<()> {
    let oidc = oidc_config(&a)?;
    let tls = match (a.tls_cert, a.tls_key, a.insecure_http) {
        (Some(cert), Some(key), false) => Some(TlsFiles { cert, key }),
        (None, None, true) => None,
        _ => bail!("give --tls-cert and --tls-key, or --insecure-http for a lab"),
    };
    // STUN first: the relay map lists the ports it got. A second port (the next one) lets a
    // node with only this server tell a NAT that maps each destination port apart (RFC 5780's
    // alternate port); if that port is taken, STUN runs on the one port alone.
    let (stun, stun_ports) = if a.no_stun {
        (None, Vec::new())
    } else {
        let alternate = a
            .stun_listen
            .port()
            .checked_add(1)
            .filter(|_| a.stun_listen.port() != 0);
        let config = |alternate_port| StunConfig {
            primary: a.stun_listen,
            alternate_ip: None,
            alternate_port,
        };
        let server = match StunServer::bind(config(alternate)).await {
            Ok(s) => s,
            Err(e) if alternate.is_some() => {
                tracing::warn!("STUN on a second port: {e}; serving STUN on one port");
                StunServer::bind(config(None))
                    .await
                    .context("starting the embedded STUN service (--no-stun turns it off)")?
            }
            Err(e) => {
                return Err(e)
                    .context("starting the embedded STUN service (--no-stun turns it off)")
            }
        };
        let primary = server.local_addr()?;
        let mut ports = vec![primary.port()];
        ports.extend(server.alternate_port());
        tracing::info!(stun = %primary, ports = ?ports, "embedded STUN service listening");
        (Some(tokio::spawn(server.run())), ports)
    };
    let relay_map = match &a.relay_map {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the relay map {}", p.display()))?;
            serde_json::from_str::<RelayMap>(&text)
                .with_context(|| format!("invalid relay map {}", p.display()))?
        }
        None if a.no_stun && a.no_relay => RelayMap::default(),
        None => {
            let relay_url = match (a.no_relay, a.relay_listen) {
                (true, _) => String::new(),
                (false, None) => "/relay".to_string(),
                (false, Some(at)) if at.port() == 0 => {
                    bail!("--relay-listen needs a port (nodes are told it in the relay map)")
                }
                (false, Some(at)) => format!(":{}/relay", at.port()),
            };
            embedded_relay_map(relay_url, &stun_ports)
        }
    };
    let settings = Settings {
        public_url: a.public_url,
        node_expiry: a.node_expiry.0,
        session_expiry: a
            .session_expiry
            .0
            .unwrap_or(Duration::from_secs(30 * 86_400)),
        relay_map,
        embedded_relay: !a.no_relay,
        relay_listen: a.relay_listen,
        metrics_listen: a.metrics_listen,
        trusted_proxies: a.trusted_proxies,
        relay_secret_hash: match &a.relay_secret_file {
            Some(p) => Some(relay_secret_hash(p)?),
            None => None,
        },
        ..Settings::default()
    };
    let mut settings = settings;
    if let Some(cfg) = oidc {
        let provider = pinhole_control::oidc::Provider::new(cfg, settings.clock.clone())
            .context("cannot set up the HTTP client for the identity provider")?;
        settings.oidc = Some(std::sync::Arc::new(provider));
    }
    if tls.is_none() {
        tracing::warn!(
            "serving plain HTTP (--insecure-http): tokens cross the network in clear text"
        );
    }
    let server = Server::start(store, a.listen, tls, settings).await?;
    let signal = shutdown_signal().await;
    tracing::info!("{signal}: shutting down");
    server.shutdown().await;
    if let Some(stun) = stun {
        stun.abort();
    }
    Ok(())
}

/// `--oidc-*`: the identity provider, if one is named.
fn oidc_config(a: &ServeArgs) -> Result<Option<pinhole_control::oidc::OidcConfig>> {
    let (Some(issuer), Some(client_id), Some(secret_file)) = (
        &a.oidc_issuer,
        &a.oidc_client_id,
        &a.oidc_client_secret_file,
    ) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(secret_file).with_context(|| {
        format!(
            "cannot read the OIDC client secret {}",
            secret_file.display()
        )
    })?;
    let client_secret = text.lines().next().unwrap_or("").trim().to_string();
    if client_secret.is_empty() {
        bail!(
            "the OIDC client secret file {} is empty",
            secret_file.display()
        );
    }
    if url::Url::parse(issuer).is_err() {
        bail!("--oidc-issuer {issuer:?} is not a URL (e.g. https://login.example.com)");
    }
    Ok(Some(pinhole_control::oidc::OidcConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret,
        extra_scopes: a.oidc_scopes.clone(),
        mapping: pinhole_control::oidc::claims::Mapping {
            account_claim: a.oidc_account_claim.clone(),
            allowed_domains: a.oidc_allowed_domains.clone(),
        },
    }))
}

/// `--trusted-proxy`: a network, or one address.
fn proxy_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8)"))
}

/// The SHA-256 of the relay secret in `path` (its first line; at least 16 characters).
fn relay_secret_hash(path: &std::path::Path) -> Result<[u8; 32]> {
    use sha2::Digest;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the relay secret {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.len() < 16 {
        bail!(
            "the relay secret in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(sha2::Sha256::digest(secret.as_bytes()).into())
}

/// The relay map when none is given: the embedded service as region "local", addressed
/// relative to the coordination server (nodes put in the host they reach it at). `relay_url`
/// is `/relay`, `:PORT/relay` for a relay on its own port, or empty for STUN only. The region
/// lists the relay with STUN on the first of `stun_ports`, and a STUN-only entry for a second.
fn embedded_relay_map(relay_url: String, stun_ports: &[u16]) -> RelayMap {
    let mut relays = vec![Relay {
        url: relay_url,
        stun: stun_ports.first().map(|p| format!(":{p}")),
    }];
    relays.extend(stun_ports.iter().skip(1).map(|p| Relay {
        url: String::new(),
        stun: Some(format!(":{p}")),
    }));
    RelayMap {
        regions: vec![RelayRegion {
            code: "local".into(),
            name: "embedded".into(),
            relays,
        }],
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_parse() {
        let cli = Cli::try_parse_from([
            "pinhole-control",
            "--db",
            "sqlite:///x.db",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--insecure-http",
            "--node-expiry",
            "never",
        ])
        .unwrap();
        match cli.command {
            Command::Serve(a) => {
                assert!(a.node_expiry.0.is_none());
                assert_eq!(a.session_expiry.0, Some(Duration::from_secs(30 * 86_400)));
            }
            c => panic!("{c:?}"),
        }
        let cli = Cli::try_parse_from([
            "pinhole-control",
            "authkey",
            "create",
            "--reusable",
            "--expiry",
            "1h",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Authkey(AuthkeyCmd::Create { reusable: true, expiry: Lifetime(Some(d)), .. }) if d.as_secs() == 3600)
        );
        assert!(Cli::try_parse_from([
            "pinhole-control",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--insecure-http",
            "--tls-cert",
            "x",
            "--tls-key",
            "y"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["pinhole-control", "authkey", "create", "--expiry", "5"]).is_err()
        );
        let serve = |extra: &[&str]| {
            let mut args = vec![
                "pinhole-control",
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--insecure-http",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        match serve(&["--relay-listen", "0.0.0.0:8443"]).unwrap().command {
            Command::Serve(a) => assert_eq!(a.relay_listen, Some("0.0.0.0:8443".parse().unwrap())),
            c => panic!("{c:?}"),
        }
        assert!(serve(&["--relay-listen", "0.0.0.0:8443", "--no-relay"]).is_err());
    }

    #[test]
    fn the_default_relay_map_names_where_the_embedded_relay_is() {
        let map = embedded_relay_map(":8443/relay".into(), &[3478, 3479]);
        assert_eq!(map.regions[0].code, "local");
        assert_eq!(map.regions[0].relays[0].url, ":8443/relay");
        assert_eq!(map.regions[0].relays[0].stun.as_deref(), Some(":3478"));
        // The second STUN port: a STUN-only entry of the same region.
        assert_eq!(map.regions[0].relays[1].url, "");
        assert_eq!(map.regions[0].relays[1].stun.as_deref(), Some(":3479"));
        // STUN only (--no-relay): the region has no relay URL, and says so on the wire.
        let json = serde_json::to_value(embedded_relay_map(String::new(), &[3478])).unwrap();
        assert_eq!(json["regions"][0]["relays"][0]["url"], "");
        assert_eq!(
            json["regions"][0]["relays"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn passwords_are_not_printed_with_the_url() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:…@h/db");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}

//! The daemon's control logic as a sans-IO state machine: signing in, following a
//! registration, being signed out by control, up/down, logout, the periodic netcheck and the
//! choice of home relay. It takes inputs (IPC requests, sign-in results, control events,
//! tunnel results, netcheck results, the time) and returns [`Action`]s for the shell
//! ([`crate::shell`]), which owns the sockets, tasks and devices and feeds the results back.
//!
//! `R` is whatever the shell answers a client with (a oneshot sender there, a number in the
//! tests): the machine decides who is answered what, and when.

use crate::control::control_link::How;
use crate::control::decide;
use crate::local_api::command::{failure, Answer};
use crate::platform::identity::Registration;
use pinhole_proto::ipc::{Credential, IpcError, LoginPrompt, LoginResult, Secret};
use pinhole_proto::key::Key;
use std::time::{Duration, Instant};

/// How often the daemon measures the relay regions on its own (and re-chooses its home).
pub const AUTO_NETCHECK_EVERY: Duration = Duration::from_secs(300);
/// A lost direct path brings the netcheck forward, but to no sooner than this after the last
/// one (many peers lost at once, or a path that flaps, ask STUN once).
pub const RESTUN_GAP: Duration = Duration::from_secs(10);

/// What comes in.
#[derive(Debug)]
pub enum Input<R> {
    /// `pinhole up`, with the person's stored session if the client has one.
    Up {
        credential: Option<Credential>,
        reply: R,
    },
    /// `pinhole down`.
    Down { reply: R },
    /// `pinhole login`.
    Login {
        server: Option<String>,
        auth_key: Option<Secret>,
        credential: Option<Credential>,
        hostname: Option<String>,
        reply: R,
    },
    /// `pinhole logout`.
    Logout {
        credential: Option<Credential>,
        reply: R,
    },
    /// The sign-in under way needs a person: a URL and a code to show.
    SignInPrompt(LoginPrompt),
    /// The sign-in under way finished, or failed (the error's code says how).
    SignInDone(Result<Signed, IpcError>),
    /// The shell tried to bring the tunnel up: done, or why not.
    TunnelStarted(Result<(), String>),
    /// A peer's direct path stopped answering: this node's public address may have changed
    /// (its router rebooted or gave it a new port), so STUN is asked again soon.
    DirectLost,
    /// The tunnel broke while up (the device could not be read).
    TunnelFailed(String),
    /// Control signed this node out (removed, expired): why.
    SignedOut(String),
    /// A netcheck finished: the best latency per region that answered, and the regions of
    /// the relay map.
    NetcheckDone {
        latencies: Vec<(String, Duration)>,
        regions: Vec<String>,
    },
    /// The relay regions of the map changed (in the map's order).
    RelayRegions(Vec<String>),
    /// Time passed; `relay_regions` says whether the map has relay regions to measure.
    Tick { relay_regions: bool },
    /// The OS says this machine's addresses or routes changed (another network, a new
    /// address): the mapping STUN saw may be another now, so measure again at once.
    NetworkChanged,
}

/// A finished sign-in, as the machine needs it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub registration: Registration,
    /// The person's session when the sign-in made one.
    pub session_token: Option<String>,
}

/// What the shell does.
#[derive(Debug)]
pub enum Action<R> {
    /// Answer a client.
    Reply(R, Answer),
    /// Save whether the tunnel should be up (it outlives a restart).
    SaveWantUp(bool),
    /// Start signing in to `server` (replacing any sign-in task under way); feed back
    /// [`Input::SignInPrompt`] and [`Input::SignInDone`].
    StartSignIn { server: String, start: SignInStart },
    /// Stop the sign-in task under way.
    CancelSignIn,
    /// Follow this registration's map stream (and show this node as it).
    Follow { registration: Registration },
    /// Stop following the map stream; forget the peers of the map.
    Unfollow,
    /// Bring the tunnel up; feed back [`Input::TunnelStarted`].
    StartTunnel,
    /// Take the tunnel down (device and routes).
    StopTunnel,
    /// Forget the registration, take a new node key, then tell control that `left` left
    /// (when there is one) and revoke `revoke`; answer `reply` with what could not be done.
    Leave {
        left: Option<Registration>,
        revoke: Option<Credential>,
        reply: R,
    },
    /// Measure the relay regions (the daemon's own netcheck, nobody waiting).
    StartNetcheck,
    /// This node's home relay is now `0`: show it, and tell control.
    HomeRelay(String),
}

/// How a sign-in goes.
#[derive(Debug)]
pub struct SignInStart {
    pub how: How,
    /// The hostname a client asked for (the shell falls back to its own).
    pub hostname: Option<String>,
    /// Keep retrying while control is unreachable (a service starting before the network).
    pub patient: bool,
    /// Fall back to a person in a browser when a stored session is refused.
    pub interactive_fallback: bool,
}

/// Who waits for a sign-in to finish.
#[derive(Debug)]
enum Waiter<R> {
    /// `pinhole login`: answered with the sign-in.
    Login(R),
    /// `pinhole up`: answered once the tunnel is up.
    Up(R),
    /// A sign-in of the daemon's own (an auth key at start).
    Nobody,
}

/// Where the node stands with control.
#[derive(Debug)]
enum Phase<R> {
    /// Not signed in (never, logged out, failed or signed out by control).
    Idle,
    SigningIn {
        server: String,
        waiter: Waiter<R>,
        prompt: Option<LoginPrompt>,
        /// The session a client handed over, kept for logout.
        session: Option<Credential>,
    },
    SignedIn {
        registration: Registration,
        session: Option<Credential>,
    },
}

/// The tunnel as the machine knows it.
#[derive(Debug)]
enum Tunnel<R> {
    Down,
    /// The shell is bringing it up; `R` waits for the outcome (a `pinhole up`).
    Starting(Option<R>),
    Up,
}

/// The daemon's control state.
#[derive(Debug)]
pub struct Machine<R> {
    static_config: bool,
    want_up: bool,
    phase: Phase<R>,
    tunnel: Tunnel<R>,
    /// The server signed in to last (kept across sign-outs; a client naming none means it).
    last_server: Option<String>,
    /// Why control signed this node out, until the next sign-in or logout.
    signed_out: Option<String>,
    /// Why the last sign-in failed.
    login_error: Option<String>,
    /// Why the tunnel could not be brought up or broke.
    tun_error: Option<String>,
    /// When the daemon's own netcheck is due (while signed in).
    netcheck_at: Instant,
    /// When the last netcheck started.
    netcheck_started: Option<Instant>,
    home_relay: Option<String>,
}

impl<R> Machine<R> {
    /// A daemon that starts with `want_up` saved, from a static configuration or for control
    /// (`server`: the one given on the command line).
    pub fn new(static_config: bool, want_up: bool, server: Option<String>, now: Instant) -> Self {
        Machine {
            static_config,
            want_up,
            phase: Phase::Idle,
            tunnel: Tunnel::Down,
            last_server: server.map(|s| s.trim_end_matches('/').to_string()),
            signed_out: None,
            login_error: None,
            tun_error: None,
            netcheck_at: now,
            netcheck_started: None,
            home_relay: None,
        }
    }

    /// The first steps: follow the `saved` registration when it is for this server and
    /// `node_key`, else sign in with `auth_key` when there is one, else wait for a login
    /// (and bring up a static configuration's tunnel when wanted). The error is for the
    /// person who started the daemon.
    pub fn start(
        &mut self,
        now: Instant,
        saved: Option<Registration>,
        node_key: &Key,
        auth_key: Option<String>,
    ) -> Result<Vec<Action<R>>, String> {
        let mut out = Vec::new();
        if self.static_config {
            self.reconcile(&mut out, None);
            return Ok(out);
        }
        let saved = saved.filter(|r| {
            let usable = r.node_key == *node_key
                && self
                    .last_server
                    .as_ref()
                    .is_none_or(|u| *u == r.control_url);
            if !usable {
                tracing::info!("the saved registration is for another server or key");
            }
            usable
        });
        if let Some(r) = saved {
            self.follow(now, &mut out, r, None);
            self.reconcile(&mut out, None);
            return Ok(out);
        }
        match (auth_key, self.last_server.clone()) {
            (Some(key), Some(server)) => self.sign_in(
                &mut out,
                server,
                Waiter::Nobody,
                None,
                SignInStart {
                    how: How::AuthKey(key),
                    hostname: None,
                    patient: true,
                    interactive_fallback: false,
                },
            ),
            (Some(_), None) => {
                return Err(
                    "an auth key needs a coordination server: give --control-url URL as well"
                        .into(),
                )
            }
            (None, _) => {}
        }
        Ok(out)
    }

    /// One input in, the actions it takes out.
    pub fn handle(&mut self, now: Instant, input: Input<R>) -> Vec<Action<R>> {
        let mut out = Vec::new();
        match input {
            Input::Up { credential, reply } => self.up(&mut out, credential, reply),
            Input::Down { reply } => {
                self.set_want_up(&mut out, false);
                self.reconcile(&mut out, None);
                out.push(Action::Reply(reply, Ok(serde_json::Value::Null)));
            }
            Input::Login {
                server,
                auth_key,
                credential,
                hostname,
                reply,
            } => self.login(&mut out, server, auth_key, credential, hostname, reply),
            Input::Logout { credential, reply } => self.logout(&mut out, credential, reply),
            Input::SignInPrompt(p) => {
                if let Phase::SigningIn { prompt, .. } = &mut self.phase {
                    *prompt = Some(p);
                }
            }
            Input::SignInDone(r) => self.sign_in_done(now, &mut out, r),
            Input::TunnelStarted(r) => self.tunnel_started(&mut out, r),
            Input::TunnelFailed(why) => {
                if !matches!(self.tunnel, Tunnel::Down) {
                    self.tunnel = Tunnel::Down;
                    out.push(Action::StopTunnel);
                }
                self.tun_error = Some(why);
            }
            Input::SignedOut(why) => {
                if matches!(self.phase, Phase::SignedIn { .. }) {
                    tracing::warn!("signed out by the coordination server: {why}");
                    self.phase = Phase::Idle;
                    self.signed_out = Some(why);
                    self.home_relay = None;
                    out.push(Action::Unfollow);
                    self.reconcile(&mut out, None);
                }
            }
            Input::NetcheckDone { latencies, regions } => {
                let home =
                    pinhole_engine::choose_home(self.home_relay.as_deref(), &latencies, &regions);
                if let Some(code) = home.filter(|h| Some(h) != self.home_relay.as_ref()) {
                    self.home_relay = Some(code.clone());
                    out.push(Action::HomeRelay(code));
                }
            }
            Input::RelayRegions(regions) => {
                // Until a netcheck has measured them, the map's first region is home: peers
                // can reach this node through a relay from the first moment, not seconds
                // later (the netcheck moves home when another region is clearly nearer).
                let lost = self
                    .home_relay
                    .as_ref()
                    .is_none_or(|h| !regions.contains(h));
                if let (true, true, Some(first)) = (self.signed_in(), lost, regions.first()) {
                    self.home_relay = Some(first.clone());
                    out.push(Action::HomeRelay(first.clone()));
                }
            }
            Input::NetworkChanged => {
                if self.signed_in() {
                    self.netcheck_at = now;
                }
            }
            Input::DirectLost => {
                if self.signed_in() {
                    let soonest = self.netcheck_started.map_or(now, |t| t + RESTUN_GAP);
                    self.netcheck_at = self.netcheck_at.min(soonest.max(now));
                }
            }
            Input::Tick { relay_regions } => {
                if self.signed_in() && relay_regions && now >= self.netcheck_at {
                    self.netcheck_at = now + AUTO_NETCHECK_EVERY;
                    self.netcheck_started = Some(now);
                    out.push(Action::StartNetcheck);
                }
            }
        }
        out
    }

    /// When the machine wants a [`Input::Tick`] next (its own netcheck), if ever.
    pub fn next_wake(&self) -> Option<Instant> {
        self.signed_in().then_some(self.netcheck_at)
    }

    #[cfg(test)]
    pub fn want_up(&self) -> bool {
        self.want_up
    }

    pub fn signed_in(&self) -> bool {
        matches!(self.phase, Phase::SignedIn { .. })
    }

    /// The registration followed now.
    pub fn registration(&self) -> Option<&Registration> {
        match &self.phase {
            Phase::SignedIn { registration, .. } => Some(registration),
            _ => None,
        }
    }

    /// The server of a sign-in under way, and its prompt for a person once there is one.
    pub fn signing_in(&self) -> Option<(&str, Option<&LoginPrompt>)> {
        match &self.phase {
            Phase::SigningIn { server, prompt, .. } => Some((server, prompt.as_ref())),
            _ => None,
        }
    }

    /// The server a client naming none means.
    pub fn last_server(&self) -> Option<&str> {
        self.last_server.as_deref()
    }

    pub fn signed_out(&self) -> Option<&str> {
        self.signed_out.as_deref()
    }

    pub fn login_error(&self) -> Option<&str> {
        self.login_error.as_deref()
    }

    pub fn tun_error(&self) -> Option<&str> {
        self.tun_error.as_deref()
    }

    #[cfg(test)]
    pub fn tunnel_up(&self) -> bool {
        matches!(self.tunnel, Tunnel::Up)
    }

    pub fn home_relay(&self) -> Option<&str> {
        self.home_relay.as_deref()
    }

    fn knows(&self) -> decide::Knows<'_> {
        decide::Knows {
            static_config: self.static_config,
            signing_in: matches!(self.phase, Phase::SigningIn { .. }),
            signed_in_to: self.registration().map(|r| r.control_url.as_str()),
            last_server: self.last_server.as_deref(),
            signed_out: self.signed_out.as_deref(),
        }
    }

    fn set_want_up(&mut self, out: &mut Vec<Action<R>>, up: bool) {
        if self.want_up != up {
            self.want_up = up;
            out.push(Action::SaveWantUp(up));
        }
    }

    /// Brings the tunnel to what the user wants and what is possible; `reply` (a `pinhole
    /// up`) is answered once the outcome is known.
    fn reconcile(&mut self, out: &mut Vec<Action<R>>, reply: Option<R>) {
        let can_run = self.static_config || self.signed_in();
        if self.want_up && can_run {
            match &mut self.tunnel {
                Tunnel::Up => {
                    if let Some(r) = reply {
                        out.push(Action::Reply(r, Ok(serde_json::Value::Null)));
                    }
                }
                Tunnel::Starting(waiting) => {
                    // Only one `up` can wait: an earlier one is answered by this one's outcome
                    // too, as far as the client cares; keep the newest.
                    if let Some(r) = reply {
                        if let Some(old) = waiting.replace(r) {
                            out.push(Action::Reply(old, Ok(serde_json::Value::Null)));
                        }
                    }
                }
                Tunnel::Down => {
                    self.tunnel = Tunnel::Starting(reply);
                    out.push(Action::StartTunnel);
                }
            }
            return;
        }
        if !matches!(self.tunnel, Tunnel::Down) {
            if let Tunnel::Starting(Some(r)) = std::mem::replace(&mut self.tunnel, Tunnel::Down) {
                out.push(Action::Reply(
                    r,
                    Err(failure("not-up", "the tunnel was taken down")),
                ));
            }
            out.push(Action::StopTunnel);
        }
        if let Some(r) = reply {
            out.push(Action::Reply(r, Ok(serde_json::Value::Null)));
        }
    }

    fn tunnel_started(&mut self, out: &mut Vec<Action<R>>, r: Result<(), String>) {
        let Tunnel::Starting(waiting) = std::mem::replace(&mut self.tunnel, Tunnel::Down) else {
            return;
        };
        match r {
            Ok(()) => {
                self.tunnel = Tunnel::Up;
                self.tun_error = None;
                if let Some(w) = waiting {
                    out.push(Action::Reply(w, Ok(serde_json::Value::Null)));
                }
            }
            Err(why) => {
                tracing::error!("{why}");
                self.tun_error = Some(why.clone());
                if let Some(w) = waiting {
                    // The person asked for up and got an error: the daemon does not keep
                    // trying at the next start either.
                    self.set_want_up(out, false);
                    out.push(Action::Reply(w, Err(failure("tun-failed", why))));
                }
            }
        }
    }

    fn up(&mut self, out: &mut Vec<Action<R>>, credential: Option<Credential>, reply: R) {
        self.set_want_up(out, true);
        match decide::up(&self.knows(), credential) {
            decide::Up::StartTunnel => self.reconcile(out, Some(reply)),
            decide::Up::AlreadySigningIn => {
                out.push(Action::Reply(reply, Ok(serde_json::Value::Null)))
            }
            decide::Up::Refuse(e) => out.push(Action::Reply(reply, Err(e))),
            decide::Up::SignIn { server, session } => {
                let how = How::Session(session.session_token.clone());
                self.sign_in(
                    out,
                    server,
                    Waiter::Up(reply),
                    Some(session),
                    SignInStart {
                        how,
                        hostname: None,
                        patient: false,
                        interactive_fallback: false,
                    },
                );
            }
        }
    }

    fn login(
        &mut self,
        out: &mut Vec<Action<R>>,
        server: Option<String>,
        auth_key: Option<Secret>,
        credential: Option<Credential>,
        hostname: Option<String>,
        reply: R,
    ) {
        match decide::login(&self.knows(), server, auth_key, credential) {
            decide::Login::Refuse(e) => out.push(Action::Reply(reply, Err(e))),
            decide::Login::AlreadySignedIn => {
                let value = match self.registration() {
                    Some(r) => Ok(login_result(r, None)),
                    None => Err(failure("needs-login", "not signed in")),
                };
                out.push(Action::Reply(reply, value));
            }
            decide::Login::SignIn {
                server,
                how,
                session,
                replace,
            } => {
                if replace {
                    self.phase = Phase::Idle;
                    out.push(Action::Unfollow);
                }
                self.sign_in(
                    out,
                    server,
                    Waiter::Login(reply),
                    session,
                    SignInStart {
                        how,
                        hostname,
                        patient: false,
                        interactive_fallback: true,
                    },
                );
            }
        }
    }

    /// Starts a sign-in; one under way is answered as replaced.
    fn sign_in(
        &mut self,
        out: &mut Vec<Action<R>>,
        server: String,
        waiter: Waiter<R>,
        session: Option<Credential>,
        start: SignInStart,
    ) {
        self.cancel_sign_in(out, "login-replaced", "a newer sign-in replaced this one");
        tracing::info!(control = %server, "signing in");
        self.login_error = None;
        self.phase = Phase::SigningIn {
            server: server.clone(),
            waiter,
            prompt: None,
            session,
        };
        out.push(Action::StartSignIn { server, start });
    }

    /// Stops a sign-in under way, answering whoever waited for it with `code`.
    fn cancel_sign_in(&mut self, out: &mut Vec<Action<R>>, code: &str, why: &str) {
        if !matches!(self.phase, Phase::SigningIn { .. }) {
            return;
        }
        if let Phase::SigningIn { waiter, .. } = std::mem::replace(&mut self.phase, Phase::Idle) {
            out.push(Action::CancelSignIn);
            if let Waiter::Login(r) | Waiter::Up(r) = waiter {
                out.push(Action::Reply(r, Err(failure(code, why))));
            }
        }
    }

    fn sign_in_done(
        &mut self,
        now: Instant,
        out: &mut Vec<Action<R>>,
        r: Result<Signed, IpcError>,
    ) {
        let Phase::SigningIn {
            server,
            waiter,
            session,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            // A sign-in that was cancelled or replaced: its result is nobody's.
            return;
        };
        match r {
            Err(e) => {
                tracing::error!("sign-in failed: {}", e.message);
                self.login_error = Some(e.message.clone());
                if let Waiter::Login(r) | Waiter::Up(r) = waiter {
                    out.push(Action::Reply(r, Err(e)));
                }
            }
            Ok(done) => {
                let credential = done
                    .session_token
                    .map(|t| Credential {
                        server: server.clone(),
                        session_token: t,
                    })
                    .or(session);
                self.last_server = Some(server);
                self.login_error = None;
                let result = login_result(&done.registration, credential.clone());
                self.follow(now, out, done.registration, credential);
                match waiter {
                    Waiter::Up(r) => self.reconcile(out, Some(r)),
                    Waiter::Login(r) => {
                        self.reconcile(out, None);
                        out.push(Action::Reply(r, Ok(result)));
                    }
                    Waiter::Nobody => self.reconcile(out, None),
                }
            }
        }
    }

    fn follow(
        &mut self,
        now: Instant,
        out: &mut Vec<Action<R>>,
        registration: Registration,
        session: Option<Credential>,
    ) {
        self.last_server = Some(registration.control_url.clone());
        self.signed_out = None;
        self.home_relay = None;
        // A new registration: measure the relays at once to choose a home.
        self.netcheck_at = now;
        self.phase = Phase::SignedIn {
            registration: registration.clone(),
            session,
        };
        out.push(Action::Follow { registration });
    }

    fn logout(&mut self, out: &mut Vec<Action<R>>, credential: Option<Credential>, reply: R) {
        let link_session = match &self.phase {
            Phase::SignedIn { session, .. } => session.clone(),
            _ => None,
        };
        let (cancel_sign_in, tell_control, revoke) =
            match decide::logout(&self.knows(), credential, link_session.as_ref()) {
                decide::Logout::Refuse(e) => {
                    out.push(Action::Reply(reply, Err(e)));
                    return;
                }
                decide::Logout::Leave {
                    cancel_sign_in,
                    tell_control,
                    revoke,
                } => (cancel_sign_in, tell_control, revoke),
            };
        if cancel_sign_in {
            self.cancel_sign_in(out, "login-cancelled", "logged out");
        }
        let left = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::SignedIn { registration, .. } => {
                out.push(Action::Unfollow);
                tell_control.then_some(registration)
            }
            _ => None,
        };
        self.reconcile(out, None);
        self.signed_out = None;
        self.login_error = None;
        self.home_relay = None;
        out.push(Action::Leave {
            left,
            revoke,
            reply,
        });
    }
}

fn login_result(r: &Registration, credential: Option<Credential>) -> serde_json::Value {
    serde_json::to_value(LoginResult {
        server: r.control_url.clone(),
        name: r.name.clone(),
        addresses: r.addresses.iter().map(|a| a.to_string()).collect(),
        credential,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "https://c.example";

    fn key(b: u8) -> Key {
        Key([b; 32])
    }

    fn reg() -> Registration {
        Registration {
            control_url: S.into(),
            node_key: key(1),
            node_id: "n1".into(),
            name: "laptop".into(),
            addresses: vec!["100.64.0.1".parse().unwrap()],
            node_token: "pht_x".into(),
            expires_at: None,
        }
    }

    fn cred() -> Credential {
        Credential {
            server: S.into(),
            session_token: "phs_x".into(),
        }
    }

    fn up(credential: Option<Credential>, reply: u32) -> Input<u32> {
        Input::Up { credential, reply }
    }

    fn logout(credential: Option<Credential>, reply: u32) -> Input<u32> {
        Input::Logout { credential, reply }
    }

    fn login(
        server: Option<String>,
        auth_key: Option<Secret>,
        credential: Option<Credential>,
        hostname: Option<String>,
        reply: u32,
    ) -> Input<u32> {
        Input::Login {
            server,
            auth_key,
            credential,
            hostname,
            reply,
        }
    }

    fn t0() -> Instant {
        Instant::now()
    }

    /// A short spelling of actions, to compare whole sequences.
    fn names(actions: &[Action<u32>]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Reply(r, Ok(_)) => format!("reply {r} ok"),
                Action::Reply(r, Err(e)) => format!("reply {r} {}", e.code),
                Action::SaveWantUp(u) => format!("save want_up={u}"),
                Action::StartSignIn { server, start } => {
                    format!("sign in to {server} with {:?}", start.how)
                }
                Action::CancelSignIn => "cancel sign-in".into(),
                Action::Follow { registration, .. } => format!("follow {}", registration.name),
                Action::Unfollow => "unfollow".into(),
                Action::StartTunnel => "start tunnel".into(),
                Action::StopTunnel => "stop tunnel".into(),
                Action::Leave {
                    left,
                    revoke,
                    reply,
                } => format!(
                    "leave {} revoke={} reply {reply}",
                    left.as_ref().map_or("-", |r| r.name.as_str()),
                    revoke.is_some()
                ),
                Action::StartNetcheck => "netcheck".into(),
                Action::HomeRelay(code) => format!("home {code}"),
            })
            .collect()
    }

    fn error_of(actions: &[Action<u32>], who: u32) -> IpcError {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Reply(r, Err(e)) if *r == who => Some(e.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no error for {who} in {:?}", names(actions)))
    }

    /// A daemon for control, signed in and up (the tunnel came up).
    fn connected(now: Instant) -> Machine<u32> {
        let mut m = Machine::new(false, true, Some(S.into()), now);
        let a = m.start(now, Some(reg()), &key(1), None).unwrap();
        assert_eq!(names(&a), ["follow laptop", "start tunnel"]);
        assert!(names(&m.handle(now, Input::TunnelStarted(Ok(())))).is_empty());
        assert!(m.tunnel_up() && m.signed_in());
        m
    }

    fn signed(token: Option<&str>) -> Input<u32> {
        Input::SignInDone(Ok(Signed {
            registration: reg(),
            session_token: token.map(str::to_string),
        }))
    }

    #[test]
    fn start_follows_a_saved_registration_only_for_this_key_and_server() {
        let now = t0();
        connected(now);
        // Another key (or another server): not followed, and without an auth key it waits.
        let mut m: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        assert!(m.start(now, Some(reg()), &key(2), None).unwrap().is_empty());
        assert!(!m.signed_in());
        let mut m: Machine<u32> = Machine::new(false, true, Some("https://b.example".into()), now);
        assert!(m.start(now, Some(reg()), &key(1), None).unwrap().is_empty());
        // An auth key signs in on its own, patiently; the tunnel follows the sign-in.
        let mut m: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        let a = m.start(now, None, &key(1), Some("phk_1".into())).unwrap();
        assert_eq!(names(&a), [format!("sign in to {S} with AuthKey(…)")]);
        assert!(matches!(&a[0], Action::StartSignIn { start, .. } if start.patient));
        assert_eq!(m.signing_in(), Some((S, None)));
        assert_eq!(
            names(&m.handle(now, signed(None))),
            ["follow laptop", "start tunnel"]
        );
        // An auth key without a server is the starter's mistake.
        let mut m: Machine<u32> = Machine::new(false, true, None, now);
        let e = m
            .start(now, None, &key(1), Some("phk_1".into()))
            .unwrap_err();
        assert!(e.contains("--control-url"), "{e}");
        // A static configuration comes up when wanted, and stays down when not.
        let mut m: Machine<u32> = Machine::new(true, true, None, now);
        assert_eq!(
            names(&m.start(now, None, &key(1), None).unwrap()),
            ["start tunnel"]
        );
        let mut m: Machine<u32> = Machine::new(true, false, None, now);
        assert!(m.start(now, None, &key(1), None).unwrap().is_empty());
    }

    #[test]
    fn interactive_login_shows_the_prompt_then_connects() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, true, None, now);
        assert!(m.start(now, None, &key(1), None).unwrap().is_empty());
        let a = m.handle(
            now,
            login(Some(format!("{S}/")), None, None, Some("laptop".into()), 7),
        );
        assert_eq!(names(&a), [format!("sign in to {S} with Interactive")]);
        let prompt = LoginPrompt {
            url: format!("{S}/device"),
            code: "ABCD-EFGH".into(),
        };
        assert!(m
            .handle(now, Input::SignInPrompt(prompt.clone()))
            .is_empty());
        assert_eq!(m.signing_in(), Some((S, Some(&prompt))));
        let a = m.handle(now, signed(Some("phs_new")));
        assert_eq!(
            names(&a),
            ["follow laptop", "start tunnel", "reply 7 ok"],
            "login is answered with the sign-in; the tunnel comes up as wanted"
        );
        let Action::Reply(_, Ok(v)) = &a[2] else {
            panic!()
        };
        assert_eq!(v["name"], "laptop");
        assert_eq!(v["credential"]["session_token"], "phs_new");
        assert!(m.handle(now, Input::TunnelStarted(Ok(()))).is_empty());
        assert!(m.tunnel_up());
        assert_eq!(m.last_server(), Some(S));
    }

    #[test]
    fn control_unreachable_during_login_fails_clearly_and_changes_nothing_else() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, true, None, now);
        m.handle(
            now,
            login(Some(S.into()), Some(Secret("phk_1".into())), None, None, 1),
        );
        let why = format!("cannot reach the coordination server at {S}");
        let a = m.handle(
            now,
            Input::SignInDone(Err(failure("login-failed", why.clone()))),
        );
        assert_eq!(names(&a), ["reply 1 login-failed"]);
        assert_eq!(m.login_error(), Some(why.as_str()));
        assert!(!m.signed_in() && m.signing_in().is_none() && !m.tunnel_up());
        // `up` now says what to do; a later login clears the error.
        let e = error_of(&m.handle(now, up(None, 2)), 2);
        assert_eq!(e.code, "needs-login");
        m.handle(
            now,
            login(Some(S.into()), Some(Secret("phk_1".into())), None, None, 3),
        );
        assert_eq!(m.login_error(), None);
    }

    #[test]
    fn up_is_answered_once_the_tunnel_is_up_or_has_failed() {
        let now = t0();
        let mut m = connected(now);
        assert_eq!(
            names(&m.handle(now, Input::Down { reply: 1 })),
            ["save want_up=false", "stop tunnel", "reply 1 ok"]
        );
        assert!(!m.tunnel_up() && !m.want_up());
        let a = m.handle(now, up(None, 2));
        assert_eq!(names(&a), ["save want_up=true", "start tunnel"]);
        let a = m.handle(now, Input::TunnelStarted(Err("no /dev/net/tun".into())));
        assert_eq!(names(&a), ["save want_up=false", "reply 2 tun-failed"]);
        assert_eq!(error_of(&a, 2).message, "no /dev/net/tun");
        assert_eq!(m.tun_error(), Some("no /dev/net/tun"));
        // Tried again, it works: the error goes, the client hears ok.
        m.handle(now, up(None, 3));
        assert_eq!(
            names(&m.handle(now, Input::TunnelStarted(Ok(())))),
            ["reply 3 ok"]
        );
        assert_eq!(m.tun_error(), None);
        // Up while up: answered at once.
        assert_eq!(names(&m.handle(now, up(None, 4))), ["reply 4 ok"]);
        // The device breaks: down, with the reason; up brings it back.
        let a = m.handle(now, Input::TunnelFailed("read failed".into()));
        assert_eq!(names(&a), ["stop tunnel"]);
        assert_eq!(m.tun_error(), Some("read failed"));
        assert!(m.want_up(), "a broken device is not the person saying down");
        let a = m.handle(now, up(None, 5));
        assert_eq!(names(&a), ["start tunnel"]);
    }

    #[test]
    fn session_expired_while_down_signs_in_again_with_the_stored_session() {
        let now = t0();
        let mut m = connected(now);
        m.handle(now, Input::Down { reply: 1 });
        let a = m.handle(now, Input::SignedOut("node key expired".into()));
        assert_eq!(names(&a), ["unfollow"], "the tunnel was down already");
        assert_eq!(m.signed_out(), Some("node key expired"));
        // Without a stored session: told why and what to do.
        let e = error_of(&m.handle(now, up(None, 2)), 2);
        assert_eq!(e.code, "needs-login");
        assert!(e.message.contains("node key expired"), "{e:?}");
        // With one: signs in again, comes up, and only then answers.
        let a = m.handle(now, up(Some(cred()), 3));
        assert_eq!(names(&a), [format!("sign in to {S} with Session(…)")]);
        assert_eq!(
            names(&m.handle(now, signed(None))),
            ["follow laptop", "start tunnel"]
        );
        assert_eq!(m.signed_out(), None);
        assert_eq!(
            names(&m.handle(now, Input::TunnelStarted(Ok(())))),
            ["reply 3 ok"]
        );
        // A stored session that control refuses: up hears why.
        m.handle(now, Input::SignedOut("node removed".into()));
        m.handle(now, up(Some(cred()), 4));
        let a = m.handle(
            now,
            Input::SignInDone(Err(failure("login-failed", "the session expired"))),
        );
        assert_eq!(names(&a), ["reply 4 login-failed"]);
    }

    #[test]
    fn signed_out_while_up_takes_the_tunnel_down_but_keeps_the_wish() {
        let now = t0();
        let mut m = connected(now);
        let a = m.handle(now, Input::SignedOut("node removed".into()));
        assert_eq!(names(&a), ["unfollow", "stop tunnel"]);
        assert!(m.want_up() && !m.signed_in());
        // A stale sign-out (not signed in any more) does nothing.
        assert!(m.handle(now, Input::SignedOut("again".into())).is_empty());
        // Logging in again brings the tunnel back without another `up`.
        m.handle(
            now,
            login(None, Some(Secret("phk_2".into())), None, None, 1),
        );
        assert_eq!(
            names(&m.handle(now, signed(None))),
            ["follow laptop", "start tunnel", "reply 1 ok"]
        );
    }

    #[test]
    fn logout_while_connecting_cancels_the_sign_in_and_ignores_its_late_result() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        m.start(now, None, &key(1), None).unwrap();
        m.handle(now, up(Some(cred()), 1));
        let a = m.handle(now, logout(Some(cred()), 2));
        assert_eq!(
            names(&a),
            [
                "cancel sign-in",
                "reply 1 login-cancelled",
                "leave - revoke=true reply 2"
            ]
        );
        assert!(m.handle(now, signed(None)).is_empty());
        assert!(!m.signed_in() && m.signing_in().is_none());
    }

    #[test]
    fn logout_while_up_leaves_control_and_revokes_the_session_it_signed_in_with() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, true, None, now);
        m.handle(now, login(Some(S.into()), None, Some(cred()), None, 1));
        m.handle(now, signed(None));
        m.handle(now, Input::TunnelStarted(Ok(())));
        let a = m.handle(now, logout(None, 2));
        assert_eq!(
            names(&a),
            [
                "unfollow",
                "stop tunnel",
                "leave laptop revoke=true reply 2"
            ]
        );
        let Some(Action::Leave { revoke, .. }) = a.last() else {
            panic!()
        };
        assert_eq!(revoke.as_ref(), Some(&cred()));
        // After logout: not signed in, nothing to revoke, the server remembered for next time.
        assert_eq!(m.last_server(), Some(S));
        let a = m.handle(now, logout(None, 3));
        assert_eq!(names(&a), ["leave - revoke=false reply 3"]);
    }

    #[test]
    fn a_newer_login_replaces_one_under_way_and_a_new_key_signs_in_again() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, false, Some(S.into()), now);
        let login = |reply, auth_key: Option<&str>| {
            login(None, auth_key.map(|k| Secret(k.into())), None, None, reply)
        };
        m.handle(now, login(1, None));
        let a = m.handle(now, login(2, Some("phk_1")));
        assert_eq!(
            names(&a),
            [
                "cancel sign-in".to_string(),
                "reply 1 login-replaced".to_string(),
                format!("sign in to {S} with AuthKey(…)")
            ]
        );
        assert_eq!(
            names(&m.handle(now, signed(None))),
            ["follow laptop", "reply 2 ok"]
        );
        // Signed in: the same login is answered with the sign-in; a new key signs in again.
        assert_eq!(names(&m.handle(now, login(3, None))), ["reply 3 ok"]);
        let a = m.handle(now, login(4, Some("phk_2")));
        assert_eq!(
            names(&a),
            [
                "unfollow".to_string(),
                format!("sign in to {S} with AuthKey(…)")
            ]
        );
    }

    #[test]
    fn a_network_change_brings_the_netcheck_forward() {
        let now = t0();
        let mut m = connected(now);
        let tick = || Input::Tick {
            relay_regions: true,
        };
        assert_eq!(names(&m.handle(now, tick())), ["netcheck"]);
        let later = now + Duration::from_secs(20);
        assert!(m.handle(later, Input::NetworkChanged).is_empty());
        assert_eq!(m.next_wake(), Some(later), "due now, not in five minutes");
        assert_eq!(names(&m.handle(later, tick())), ["netcheck"]);
        let mut out: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        assert!(out.handle(now, Input::NetworkChanged).is_empty());
        assert_eq!(out.next_wake(), None, "signed out: nothing to measure");
    }

    #[test]
    fn a_lost_direct_path_asks_stun_again_at_most_every_10_s() {
        let now = t0();
        let mut m = connected(now);
        let tick = || Input::Tick {
            relay_regions: true,
        };
        assert_eq!(names(&m.handle(now, tick())), ["netcheck"]);
        // Lost 3 s after a netcheck: the next one 10 s after that one, not in five minutes.
        let lost = now + Duration::from_secs(3);
        assert!(m.handle(lost, Input::DirectLost).is_empty());
        assert_eq!(m.next_wake(), Some(now + RESTUN_GAP));
        assert!(m.handle(lost, tick()).is_empty(), "not yet");
        assert_eq!(names(&m.handle(now + RESTUN_GAP, tick())), ["netcheck"]);
        // Lost long after the last one: at once; a second loss meanwhile changes nothing.
        let much_later = now + Duration::from_secs(60);
        m.handle(much_later, Input::DirectLost);
        m.handle(much_later + Duration::from_secs(1), Input::DirectLost);
        assert_eq!(m.next_wake(), Some(much_later));
        let mut out: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        assert!(out.handle(now, Input::DirectLost).is_empty());
        assert_eq!(out.next_wake(), None, "signed out: nothing to measure");
    }

    #[test]
    fn the_own_netcheck_runs_when_signed_in_then_every_five_minutes() {
        let now = t0();
        let tick = Input::Tick {
            relay_regions: true,
        };
        let mut m: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        assert_eq!(m.next_wake(), None, "not signed in: no netcheck");
        assert!(m
            .handle(
                now,
                Input::Tick {
                    relay_regions: true
                }
            )
            .is_empty());
        let mut m = connected(now);
        assert_eq!(m.next_wake(), Some(now));
        assert!(m
            .handle(
                now,
                Input::Tick {
                    relay_regions: false
                }
            )
            .is_empty());
        assert_eq!(names(&m.handle(now, tick)), ["netcheck"]);
        let later = now + Duration::from_secs(1);
        assert!(m
            .handle(
                later,
                Input::Tick {
                    relay_regions: true
                }
            )
            .is_empty());
        assert_eq!(m.next_wake(), Some(now + AUTO_NETCHECK_EVERY));
        let due = now + AUTO_NETCHECK_EVERY;
        assert_eq!(
            names(&m.handle(
                due,
                Input::Tick {
                    relay_regions: true
                }
            )),
            ["netcheck"]
        );
    }

    #[test]
    fn netcheck_results_choose_the_home_relay_once() {
        let now = t0();
        let mut m = connected(now);
        let regions = vec!["fra".to_string(), "nyc".to_string()];
        let done = |fra: u64, nyc: u64| Input::NetcheckDone {
            latencies: vec![
                ("fra".into(), Duration::from_millis(fra)),
                ("nyc".into(), Duration::from_millis(nyc)),
            ],
            regions: regions.clone(),
        };
        assert_eq!(names(&m.handle(now, done(20, 90))), ["home fra"]);
        assert_eq!(m.home_relay(), Some("fra"));
        assert!(m.handle(now, done(22, 90)).is_empty(), "no news, no update");
        assert_eq!(names(&m.handle(now, done(200, 30))), ["home nyc"]);
        // A sign-out forgets the home: the next registration chooses again.
        m.handle(now, Input::SignedOut("node removed".into()));
        assert_eq!(m.home_relay(), None);
    }

    #[test]
    fn the_first_region_is_home_until_a_netcheck_says_otherwise() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(false, true, Some(S.into()), now);
        let regions = |r: &[&str]| Input::RelayRegions(r.iter().map(|s| s.to_string()).collect());
        assert!(
            m.handle(now, regions(&["fra", "nyc"])).is_empty(),
            "not signed in: no home"
        );
        let mut m = connected(now);
        assert_eq!(
            names(&m.handle(now, regions(&["fra", "nyc"]))),
            ["home fra"]
        );
        assert!(
            m.handle(now, regions(&["nyc", "fra"])).is_empty(),
            "still there"
        );
        let done = Input::NetcheckDone {
            latencies: vec![
                ("fra".into(), Duration::from_millis(90)),
                ("nyc".into(), Duration::from_millis(10)),
            ],
            regions: vec!["fra".into(), "nyc".into()],
        };
        assert_eq!(names(&m.handle(now, done)), ["home nyc"]);
        // The home region leaves the map: the first one left takes over.
        assert_eq!(
            names(&m.handle(now, regions(&["sfo", "fra"]))),
            ["home sfo"]
        );
    }

    #[test]
    fn a_static_configuration_neither_logs_in_nor_out() {
        let now = t0();
        let mut m: Machine<u32> = Machine::new(true, true, None, now);
        m.start(now, None, &key(1), None).unwrap();
        let e = error_of(
            &m.handle(now, login(Some(S.into()), None, None, None, 1)),
            1,
        );
        assert_eq!(e.code, "static-config");
        let e = error_of(&m.handle(now, logout(None, 2)), 2);
        assert_eq!(e.code, "static-config");
        // Down then up works without any sign-in.
        m.handle(now, Input::TunnelStarted(Ok(())));
        m.handle(now, Input::Down { reply: 3 });
        assert_eq!(
            names(&m.handle(now, up(None, 4))),
            ["save want_up=true", "start tunnel"]
        );
    }
}

//! What pinholed does about `up`, `login` and `logout`, decided from what it knows: pure
//! functions that return the decision, unit-tested for every case (the failure paths too);
//! the state machine in [`crate::control::machine`] applies them and the shell
//! ([`crate::shell`]) carries out its actions.

use crate::control::control_link::How;
use crate::local_api::command::failure;
use pinhole_proto::ipc::{Credential, IpcError, Secret};

/// What the daemon knows that these decisions depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knows<'a> {
    /// Run from a static WireGuard configuration: no sign-in at all.
    pub static_config: bool,
    /// A sign-in is under way.
    pub signing_in: bool,
    /// The coordination server this node is registered with, if it is.
    pub signed_in_to: Option<&'a str>,
    /// The server it was last signed in to (kept across sign-outs).
    pub last_server: Option<&'a str>,
    /// Why control signed this node out, if it did.
    pub signed_out: Option<&'a str>,
}

/// `pinhole up`.
#[derive(Debug, PartialEq, Eq)]
pub enum Up {
    /// Bring the tunnel up (signed in, or a static configuration).
    StartTunnel,
    /// Sign in again with the person's stored session, then bring the tunnel up.
    SignIn {
        server: String,
        session: Credential,
    },
    /// A sign-in is under way already: the tunnel follows it.
    AlreadySigningIn,
    Refuse(IpcError),
}

pub fn up(k: &Knows<'_>, credential: Option<Credential>) -> Up {
    if k.static_config || k.signed_in_to.is_some() {
        return Up::StartTunnel;
    }
    if k.signing_in {
        return Up::AlreadySigningIn;
    }
    let server = credential
        .as_ref()
        .map(|c| c.server.clone())
        .or_else(|| k.last_server.map(str::to_string));
    match (credential, server) {
        (Some(c), Some(server)) if c.server == server => Up::SignIn { server, session: c },
        _ => Up::Refuse(failure(
            "needs-login",
            match k.signed_out {
                Some(why) => format!(
                    "the coordination server signed this node out ({why}): run `pinhole login`"
                ),
                None => "not signed in: run `pinhole login --server URL` first".into(),
            },
        )),
    }
}

/// `pinhole login`.
#[derive(Debug)]
pub enum Login {
    /// Signed in to that server already, and no new key: answer with the current sign-in.
    AlreadySignedIn,
    /// Sign in to `server` (first forgetting the current registration when `replace`).
    SignIn {
        server: String,
        how: How,
        session: Option<Credential>,
        replace: bool,
    },
    Refuse(IpcError),
}

pub fn login(
    k: &Knows<'_>,
    server: Option<String>,
    auth_key: Option<Secret>,
    credential: Option<Credential>,
) -> Login {
    if k.static_config {
        return Login::Refuse(failure(
            "static-config",
            "pinholed runs from a static WireGuard configuration (--config) and does not sign in",
        ));
    }
    let server = server
        .map(|s| s.trim_end_matches('/').to_string())
        .or_else(|| k.last_server.map(str::to_string))
        .or_else(|| credential.as_ref().map(|c| c.server.clone()));
    let Some(server) = server else {
        return Login::Refuse(failure(
            "no-server",
            "which coordination server? run `pinhole login --server URL`",
        ));
    };
    let mut replace = false;
    if let Some(current) = k.signed_in_to {
        if current != server {
            return Login::Refuse(failure(
                "already-signed-in",
                format!("signed in to {current} already: run `pinhole logout` first"),
            ));
        }
        if auth_key.is_none() {
            return Login::AlreadySignedIn;
        }
        // A new auth key: sign in again as the same node.
        replace = true;
    }
    let session = credential.filter(|c| c.server == server);
    let how = match (auth_key, &session) {
        (Some(k), _) => How::AuthKey(k.0),
        (None, Some(c)) => How::Session(c.session_token.clone()),
        (None, None) => How::Interactive,
    };
    Login::SignIn {
        server,
        how,
        session,
        replace,
    }
}

/// `pinhole logout`.
#[derive(Debug, PartialEq, Eq)]
pub enum Logout {
    /// Leave: cancel a sign-in under way, stop the tunnel, forget the registration, replace
    /// the node key; tell control when registered; revoke `revoke`, the person's session.
    Leave {
        cancel_sign_in: bool,
        tell_control: bool,
        revoke: Option<Credential>,
    },
    Refuse(IpcError),
}

pub fn logout(
    k: &Knows<'_>,
    credential: Option<Credential>,
    link_session: Option<&Credential>,
) -> Logout {
    if k.static_config {
        return Logout::Refuse(failure(
            "static-config",
            "pinholed runs from a static WireGuard configuration (--config): nothing to log out of",
        ));
    }
    Logout::Leave {
        cancel_sign_in: k.signing_in,
        tell_control: k.signed_in_to.is_some(),
        // The person's session is revoked too, also when the node had been signed out already.
        revoke: credential.or_else(|| link_session.cloned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "https://c.example";

    fn cred(server: &str) -> Credential {
        Credential {
            server: server.into(),
            session_token: "phs_x".into(),
        }
    }

    fn code(e: &IpcError) -> &str {
        &e.code
    }

    #[test]
    fn up_in_every_situation() {
        let signed_in = Knows {
            signed_in_to: Some(S),
            last_server: Some(S),
            ..Knows::default()
        };
        assert_eq!(up(&signed_in, None), Up::StartTunnel);
        let static_config = Knows {
            static_config: true,
            ..Knows::default()
        };
        assert_eq!(up(&static_config, None), Up::StartTunnel);
        // Never signed in: told what to run.
        let Up::Refuse(e) = up(&Knows::default(), None) else {
            panic!()
        };
        assert_eq!(code(&e), "needs-login");
        assert!(e.message.contains("pinhole login --server"), "{e:?}");
        // The session expired while the tunnel was down: the stored session signs in again;
        // without one, the message says the server signed it out.
        let expired = Knows {
            last_server: Some(S),
            signed_out: Some("node key expired"),
            ..Knows::default()
        };
        assert_eq!(
            up(&expired, Some(cred(S))),
            Up::SignIn {
                server: S.into(),
                session: cred(S)
            }
        );
        let Up::Refuse(e) = up(&expired, None) else {
            panic!()
        };
        assert!(e.message.contains("node key expired"), "{e:?}");
        // A stored session signs in to its own server, whichever was used last.
        assert!(matches!(
            up(&expired, Some(cred("https://other.example"))),
            Up::SignIn { .. }
        ));
        let other = Knows {
            last_server: Some("https://other.example"),
            ..Knows::default()
        };
        assert!(matches!(up(&other, Some(cred(S))), Up::SignIn { .. }));
        // While a sign-in is under way, up waits for it.
        let busy = Knows {
            signing_in: true,
            ..Knows::default()
        };
        assert_eq!(up(&busy, Some(cred(S))), Up::AlreadySigningIn);
    }

    #[test]
    fn login_in_every_situation() {
        let fresh = Knows::default();
        // No server anywhere.
        let Login::Refuse(e) = login(&fresh, None, None, None) else {
            panic!()
        };
        assert_eq!(code(&e), "no-server");
        // An auth key; a stored session for that server; otherwise a person in a browser.
        match login(
            &fresh,
            Some(format!("{S}/")),
            Some(Secret("phk_1".into())),
            None,
        ) {
            Login::SignIn {
                server,
                how: How::AuthKey(k),
                replace: false,
                ..
            } => assert_eq!((server.as_str(), k.as_str()), (S, "phk_1")),
            other => panic!("{other:?}"),
        }
        match login(&fresh, Some(S.into()), None, Some(cred(S))) {
            Login::SignIn {
                how: How::Session(_),
                session: Some(c),
                ..
            } => assert_eq!(c, cred(S)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            login(
                &fresh,
                Some(S.into()),
                None,
                Some(cred("https://other.example"))
            ),
            Login::SignIn {
                how: How::Interactive,
                session: None,
                ..
            }
        ));
        // The server comes from the last sign-in, then from the stored session.
        let known = Knows {
            last_server: Some(S),
            ..Knows::default()
        };
        assert!(matches!(
            login(&known, None, None, None),
            Login::SignIn { server, .. } if server == S
        ));
        assert!(matches!(
            login(&fresh, None, None, Some(cred(S))),
            Login::SignIn { server, how: How::Session(_), .. } if server == S
        ));
        // Signed in already: to another server it is refused; to the same one it answers
        // with the current sign-in, or signs in again as the same node with a new key.
        let signed_in = Knows {
            signed_in_to: Some(S),
            last_server: Some(S),
            ..Knows::default()
        };
        let Login::Refuse(e) = login(&signed_in, Some("https://other.example".into()), None, None)
        else {
            panic!()
        };
        assert_eq!(code(&e), "already-signed-in");
        assert!(e.message.contains("pinhole logout"), "{e:?}");
        assert!(matches!(
            login(&signed_in, None, None, None),
            Login::AlreadySignedIn
        ));
        assert!(matches!(
            login(&signed_in, None, Some(Secret("phk_2".into())), None),
            Login::SignIn { replace: true, .. }
        ));
        // A static configuration does not sign in.
        let static_config = Knows {
            static_config: true,
            ..Knows::default()
        };
        let Login::Refuse(e) = login(&static_config, Some(S.into()), None, None) else {
            panic!()
        };
        assert_eq!(code(&e), "static-config");
    }

    #[test]
    fn logout_in_every_situation() {
        // While a sign-in is under way (connecting): it is cancelled; control has nothing to
        // be told; the stored session is revoked.
        let connecting = Knows {
            signing_in: true,
            last_server: Some(S),
            ..Knows::default()
        };
        assert_eq!(
            logout(&connecting, Some(cred(S)), None),
            Logout::Leave {
                cancel_sign_in: true,
                tell_control: false,
                revoke: Some(cred(S))
            }
        );
        // Signed in: control is told; the session the node signed in with is revoked when
        // the client has none stored.
        let signed_in = Knows {
            signed_in_to: Some(S),
            ..Knows::default()
        };
        assert_eq!(
            logout(&signed_in, None, Some(&cred(S))),
            Logout::Leave {
                cancel_sign_in: false,
                tell_control: true,
                revoke: Some(cred(S))
            }
        );
        // Signed out by control already: still leaves cleanly.
        let expired = Knows {
            signed_out: Some("node removed"),
            ..Knows::default()
        };
        assert_eq!(
            logout(&expired, None, None),
            Logout::Leave {
                cancel_sign_in: false,
                tell_control: false,
                revoke: None
            }
        );
        let static_config = Knows {
            static_config: true,
            ..Knows::default()
        };
        assert!(matches!(
            logout(&static_config, None, None),
            Logout::Refuse(e) if e.code == "static-config"
        ));
    }
}

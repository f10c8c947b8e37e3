//! Sign-in and registration as the loop performs them: the control client, the sign-in task
//! and its prompts, following a registration (the map stream), leaving, the map's messages,
//! the home relay published to control, and the tags the node asks for.

use super::*;

impl Daemon<'_> {
    /// The client for `url`: one per server for the daemon's run, so the map stream and the
    /// updates reuse the connections the sign-in opened (on a lossy network every new
    /// connection risks a lost SYN and a second's wait), and learn how fast the server answers.
    pub(super) fn client(&self, url: &str) -> Result<ControlClient> {
        let mut cached = self
            .control_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.base_url() == url.trim_end_matches('/'))
        {
            return Ok(c.clone());
        }
        let c = ControlClient::new(url, self.control_ca.as_deref())?;
        *cached = Some(c.clone());
        Ok(c)
    }

    pub(super) fn hostname(&self, asked: Option<String>) -> String {
        asked
            .or_else(|| self.args.hostname.clone())
            .unwrap_or_else(crate::args::os_hostname)
    }

    /// Starts the sign-in task; a server that cannot be used fails the sign-in at once.
    pub(super) fn start_sign_in(
        &mut self,
        server: String,
        start: SignInStart,
    ) -> Option<Input<oneshot::Sender<Answer>>> {
        self.signing_in = None;
        let client = match self.client(&server) {
            Ok(c) => c,
            Err(e) => {
                return Some(Input::SignInDone(Err(failure(
                    "bad-server",
                    format!("{e:#}"),
                ))))
            }
        };
        let how = SignIn {
            hostname: self.hostname(start.hostname),
            tags: self.prefs.advertise_tags.clone(),
            routes: self.prefs.offered_routes(),
            how: start.how,
            patient: start.patient,
            interactive_fallback: start.interactive_fallback,
        };
        let (prompt_tx, prompts) = mpsc::channel(4);
        let task = tokio::spawn({
            let dir = self.args.state_dir.clone();
            let (private, disco_key) = (self.node_private.clone(), self.disco_key);
            async move {
                control_link::sign_in(&client, &dir, &private, disco_key, how, prompt_tx).await
            }
        });
        self.signing_in = Some(SigningIn { task, prompts });
        None
    }

    /// Starts following the map stream of a registration.
    pub(super) fn follow(
        &mut self,
        registration: Registration,
    ) -> Option<Input<oneshot::Sender<Answer>>> {
        let client = match self.client(&registration.control_url) {
            Ok(c) => c,
            Err(e) => {
                return Some(Input::SignedOut(format!(
                    "the server's address cannot be used: {e:#}"
                )))
            }
        };
        let port = self.local.port();
        let (tx, rx) = mpsc::channel(256);
        let node = control_link::Following {
            client: client.clone(),
            reg: registration.clone(),
            disco_key: self.disco_key,
            port,
        };
        let follower = tokio::spawn(control_link::follow(
            node,
            tx,
            control_link::Discovered {
                reflexive: self.reflexive.subscribe(),
                portmapped: self.port_mapping.subscribe(),
                network_changed: self.network_changed.clone(),
            },
        ));
        self.port_mapping.start();
        self.mapped.reset(&mut self.engine, Some(rx));
        self.relay_regions.clear();
        self.reporter.set_home_relay(None);
        self.reporter.set_self(Some(status::self_status(
            registration.name.clone(),
            self.engine.public_key().to_base64(),
            registration
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            registration.expires_at,
        )));
        self.link = Some(Link { client, follower });
        None
    }

    /// Logout's part with the outside world: forget the registration, take a new node key
    /// (the next sign-in is a new node), tell control that `left` left and revoke `revoke`,
    /// each bounded in time; the answer says what could not be done.
    pub(super) async fn leave(
        &mut self,
        left: Option<Registration>,
        revoke: Option<Credential>,
    ) -> Answer {
        identity::forget_registration(&self.args.state_dir);
        match identity::new_node_key(&self.args.state_dir) {
            Ok(k) => {
                self.engine = Engine::new(&k, Instant::now());
                self.engine.set_disco_key(self.disco_private.clone());
                self.relays.set_key(k.clone());
                self.node_private = k;
            }
            Err(e) => tracing::warn!("keeping the node key: {e:#}"),
        }
        let mut warnings = Vec::new();
        if let Some(r) = &left {
            let told = match self.client(&r.control_url) {
                Ok(client) => bounded(client.delete_self(&r.node_token)).await,
                Err(e) => Err(format!("{e:#}")),
            };
            match told {
                Ok(()) => tracing::info!("logged out: the node left the network"),
                Err(e) => warnings.push(format!("the coordination server was not told: {e}")),
            }
        }
        if let Some(c) = revoke {
            let revoked = match self.client(&c.server) {
                Ok(client) => bounded(client.logout(&c.session_token)).await,
                Err(e) => Err(format!("{e:#}")),
            };
            match revoked {
                Ok(()) => tracing::info!("the session was revoked"),
                Err(e) => warnings.push(format!("the session could not be revoked: {e}")),
            }
        }
        let result = LogoutResult {
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        };
        Ok(serde_json::to_value(&result).unwrap_or_default())
    }

    /// A message from the control link: the map applied to the engine; a sign-out or new
    /// relay regions told to the machine.
    pub(super) async fn control_message(&mut self, msg: ControlMsg) {
        let signed_out = matches!(msg, ControlMsg::SignedOut(_))
            || matches!(&msg, ControlMsg::Map(m) if matches!(**m, pinhole_proto::control::MapMessage::Goodbye { .. }));
        let names_may_change = !matches!(
            &msg,
            ControlMsg::Unreachable(_) | ControlMsg::Endpoints(_)
        ) && !matches!(&msg, ControlMsg::Map(m) if matches!(**m, pinhole_proto::control::MapMessage::PeersOnline { .. } | pinhole_proto::control::MapMessage::Keepalive));
        self.mapped.apply(&mut self.engine, msg);
        // A peer updated from the map carries its own addresses only: its routes go back.
        self.sync_routes().await;
        if names_may_change {
            self.names
                .set_map(self.mapped.self_node(), self.mapped.map_peers().into_iter());
            self.sync_os_dns();
        }
        if let Some(why) = self.mapped.signed_out.clone().filter(|_| signed_out) {
            self.feed(Input::SignedOut(why)).await;
        }
        let regions: Vec<String> = self
            .mapped
            .relay_map()
            .map(|m| m.regions.iter().map(|r| r.code.clone()).collect())
            .unwrap_or_default();
        if regions != self.relay_regions {
            self.relay_regions = regions.clone();
            self.feed(Input::RelayRegions(regions)).await;
        }
        self.publish();
    }

    /// The sign-in task's prompt (a URL to open) or its end.
    pub(super) async fn sign_in_event(&mut self, e: SignInEvent) {
        let input = match e {
            SignInEvent::Prompt(p) => Input::SignInPrompt(p),
            SignInEvent::Done(r) => {
                // The task is finished: it must not be polled again.
                self.signing_in = None;
                Input::SignInDone(
                    r.map(|done| Signed {
                        registration: done.registration,
                        session_token: done.session_token,
                    })
                    .map_err(|e| failure("login-failed", format!("{e:#}"))),
                )
            }
        };
        self.feed(input).await;
        self.publish();
    }

    /// `pinhole up --advertise-tags`: asks control for the tags at once when signed in (a
    /// refusal is the answer, and nothing changes), and remembers them for the next sign-in.
    pub(super) async fn set_tags(
        &mut self,
        mut tags: Vec<String>,
    ) -> Result<(), pinhole_proto::ipc::IpcError> {
        tags.sort();
        tags.dedup();
        if tags == self.prefs.advertise_tags {
            return Ok(());
        }
        let upd = pinhole_proto::control::NodeUpdate {
            tags: Some(tags.clone()),
            ..Default::default()
        };
        self.update_self(upd, "tags", "tags-refused").await?;
        self.prefs.set_advertise_tags(tags);
        Ok(())
    }

    /// `pinhole up --advertise-routes/--advertise-exit-node`: offers them to control at once when
    /// signed in (a refusal is the answer, and nothing changes), and remembers them for the next
    /// sign-in.
    pub(super) async fn set_routes(
        &mut self,
        routes: Option<Vec<String>>,
        exit_node: Option<bool>,
    ) -> Result<(), pinhole_proto::ipc::IpcError> {
        let routes = match routes {
            None => self.prefs.advertise_routes.clone(),
            Some(list) => {
                let mut out = Vec::new();
                for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    let net: ipnet::IpNet = s.parse().map_err(|_| {
                        failure(
                            "bad-route",
                            format!("{s:?} is not a CIDR (e.g. 192.168.1.0/24)"),
                        )
                    })?;
                    out.push(net);
                }
                out
            }
        };
        let exit_node = exit_node.unwrap_or(self.prefs.advertise_exit_node);
        if routes == self.prefs.advertise_routes && exit_node == self.prefs.advertise_exit_node {
            return Ok(());
        }
        let upd = pinhole_proto::control::NodeUpdate {
            advertised_routes: Some(Prefs::offered(&routes, exit_node)),
            ..Default::default()
        };
        self.update_self(upd, "routes", "routes-refused").await?;
        self.prefs.set_advertised_routes(routes, exit_node);
        Ok(())
    }

    /// Sends control a change to this node's record when signed in (bounded at 10 s): a refusal
    /// or no answer is an error naming `what`, and the caller then changes nothing.
    async fn update_self(
        &mut self,
        upd: pinhole_proto::control::NodeUpdate,
        what: &str,
        refused: &str,
    ) -> Result<(), pinhole_proto::ipc::IpcError> {
        let Some(r) = self.machine.registration().cloned() else {
            return Ok(());
        };
        let client = self
            .client(&r.control_url)
            .map_err(|e| failure("bad-server", format!("{e:#}")))?;
        let asked =
            tokio::time::timeout(Duration::from_secs(10), client.update(&r.node_token, &upd));
        match asked.await {
            Ok(Ok(_)) => {
                tracing::info!("{what} accepted by the coordination server");
                Ok(())
            }
            Ok(Err(e)) => Err(failure(
                refused,
                format!("the coordination server refused the {what}: {e}"),
            )),
            Err(_) => Err(failure(
                "control-unreachable",
                format!(
                    "the coordination server did not answer within 10 s: the {what} are unchanged"
                ),
            )),
        }
    }

    /// Tells control this node's new home relay (peers reach it there) and shows it.
    pub(super) fn publish_home_relay(&mut self, code: String) {
        tracing::info!(region = %code, "home relay chosen");
        self.reporter.set_home_relay(Some(code.clone()));
        let (Some(l), Some(r)) = (&self.link, self.machine.registration()) else {
            return;
        };
        let (client, token) = (l.client.clone(), r.node_token.clone());
        tokio::spawn(async move {
            let upd = pinhole_proto::control::NodeUpdate {
                endpoints: None,
                home_relay: Some(code),
                disco_key: None,
                tags: None,
                advertised_routes: None,
            };
            if let Err(e) = client.update(&token, &upd).await {
                tracing::warn!("publishing the home relay: {e}");
            }
        });
    }
}

/// A call to control on logout, bounded to 10 s: Ok also when control no longer knows the
/// node or session (nothing left to undo), else what went wrong.
async fn bounded(
    call: impl std::future::Future<Output = Result<(), pinhole_control_client::ClientError>>,
) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_auth() => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

//! The port mapper as the loop drives it: started while signed in, stopped (deleting the
//! gateway's mapping), and its state for `pinhole netcheck`.

use super::*;

impl Daemon<'_> {
    /// Starts the port mapper (unless turned off), which maps this node's UDP port on the
    /// gateway while the node is signed in.
    pub(super) fn start_port_mapping(&mut self) {
        if self.args.no_port_mapping || self.portmapper.is_some() {
            return;
        }
        let (commands, rx) = mpsc::channel(4);
        // A mapper still deleting its mapping finishes first (it would delete the new one).
        let stopping = self.portmap_stopping.take();
        let (port, state) = (self.local.port(), self.portmapped.clone());
        let task = tokio::spawn(async move {
            if let Some(old) = stopping {
                let _ = old.await;
            }
            portmap::run(port, portmap::default_gateway, state, rx).await
        });
        self.portmapper = Some(PortMapper { commands, task });
    }

    /// Tells the port mapper to delete its mapping and end; its task, to wait for.
    pub(super) fn stop_port_mapping(&mut self) -> Option<&mut JoinHandle<()>> {
        let pm = self.portmapper.take()?;
        let _ = pm.commands.try_send(portmap::Command::Stop);
        self.portmap_stopping = Some(pm.task);
        self.portmap_stopping.as_mut()
    }

    /// The port mapper's state as netcheck reports it.
    pub(super) fn port_mapping_check(&self) -> PortMapCheck {
        if self.args.no_port_mapping {
            return PortMapCheck {
                error: Some("turned off (--no-port-mapping)".into()),
                ..Default::default()
            };
        }
        if self.portmapper.is_none() {
            return PortMapCheck {
                error: Some("not tried: not signed in".into()),
                ..Default::default()
            };
        }
        let state = self.portmapped.borrow();
        match &state.mapped {
            Some(m) => PortMapCheck {
                protocol: Some(m.protocol.to_string()),
                external: Some(m.external.to_string()),
                gateway: Some(m.gateway.to_string()),
                error: None,
            },
            None => PortMapCheck {
                error: Some(
                    state
                        .error
                        .clone()
                        .unwrap_or_else(|| "still asking the gateway".into()),
                ),
                ..Default::default()
            },
        }
    }
}

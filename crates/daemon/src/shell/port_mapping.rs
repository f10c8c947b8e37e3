//! The port mapper as the loop holds it: one handle that starts the mapping task while the
//! node is signed in, refreshes it when the network changes, stops it (the gateway's mapping
//! deleted), and says what it holds for the map stream and for `pinhole netcheck`.

use pinhole_portmap as portmap;
use pinhole_proto::ipc::PortMapCheck;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The port mapper: off (`--no-port-mapping`), idle, running, or finishing a stop.
pub(super) struct PortMapping {
    /// False with `--no-port-mapping`.
    enabled: bool,
    /// The node's UDP port, the one mapped.
    port: u16,
    /// What the mapper holds on the gateway (a `portmap` endpoint to publish).
    state: watch::Sender<portmap::State>,
    running: Option<Running>,
    /// A mapper told to stop, still deleting its mapping.
    stopping: Option<JoinHandle<()>>,
}

/// The mapping task and its command channel.
struct Running {
    commands: mpsc::Sender<portmap::Command>,
    task: JoinHandle<()>,
}

impl PortMapping {
    pub(super) fn new(enabled: bool, port: u16) -> Self {
        PortMapping {
            enabled,
            port,
            state: watch::Sender::new(portmap::State::default()),
            running: None,
            stopping: None,
        }
    }

    /// What the mapper holds, as it changes (for the map stream to publish).
    pub(super) fn subscribe(&self) -> watch::Receiver<portmap::State> {
        self.state.subscribe()
    }

    /// Starts the mapper (unless turned off or running), which maps the node's UDP port on the
    /// gateway until stopped.
    pub(super) fn start(&mut self) {
        if !self.enabled || self.running.is_some() {
            return;
        }
        let (commands, rx) = mpsc::channel(4);
        // A mapper still deleting its mapping finishes first (it would delete the new one).
        let stopping = self.stopping.take();
        let (port, state) = (self.port, self.state.clone());
        let task = tokio::spawn(async move {
            if let Some(old) = stopping {
                let _ = old.await;
            }
            portmap::run(port, portmap::default_gateway, state, rx).await
        });
        self.running = Some(Running { commands, task });
    }

    /// Another network: the mapper asks the (maybe new) gateway again.
    pub(super) fn refresh(&self) {
        if let Some(r) = &self.running {
            let _ = r.commands.try_send(portmap::Command::Refresh);
        }
    }

    /// Tells the mapper to delete its mapping and end; its task, to wait for.
    pub(super) fn stop(&mut self) -> Option<&mut JoinHandle<()>> {
        let r = self.running.take()?;
        let _ = r.commands.try_send(portmap::Command::Stop);
        self.stopping = Some(r.task);
        self.stopping.as_mut()
    }

    /// The mapper's state as netcheck reports it.
    pub(super) fn check(&self) -> PortMapCheck {
        let error = |why: &str| PortMapCheck {
            error: Some(why.to_string()),
            ..Default::default()
        };
        if !self.enabled {
            return error("turned off (--no-port-mapping)");
        }
        if self.running.is_none() {
            return error("not tried: not signed in");
        }
        let state = self.state.borrow();
        match &state.mapped {
            Some(m) => PortMapCheck {
                protocol: Some(m.protocol.to_string()),
                external: Some(m.external.to_string()),
                gateway: Some(m.gateway.to_string()),
                error: None,
            },
            None => error(state.error.as_deref().unwrap_or("still asking the gateway")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netcheck_says_why_there_is_no_mapping() {
        let off = PortMapping::new(false, 41641);
        assert_eq!(
            off.check().error.as_deref(),
            Some("turned off (--no-port-mapping)")
        );
        let idle = PortMapping::new(true, 41641);
        assert_eq!(
            idle.check().error.as_deref(),
            Some("not tried: not signed in")
        );
    }

    #[tokio::test]
    async fn netcheck_shows_what_the_running_mapper_found_and_stop_hands_over_its_task() {
        let mut off = PortMapping::new(false, 41641);
        off.start();
        assert!(off.stop().is_none(), "a turned-off mapper never runs");
        // Port 0: the mapper finds nothing to map and says so (no gateway is asked).
        let mut on = PortMapping::new(true, 0);
        let mut state = on.subscribe();
        on.start();
        assert_eq!(
            on.check().error.as_deref(),
            Some("still asking the gateway"),
            "running, nothing heard yet"
        );
        tokio::time::timeout(std::time::Duration::from_secs(10), state.changed())
            .await
            .expect("the mapper reports")
            .expect("the state is still there");
        assert_eq!(on.check().error.as_deref(), Some("no UDP port to map"));
        on.start();
        let task = on.stop().expect("the running mapper's task");
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the task ends")
            .expect("the task did not panic");
        assert!(on.stop().is_none(), "stopped once");
        assert_eq!(
            on.check().error.as_deref(),
            Some("not tried: not signed in")
        );
    }
}

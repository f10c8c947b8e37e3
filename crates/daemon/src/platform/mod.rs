//! What differs by operating system: the service managers (`win_service`, `service_notify`),
//! the state directory and its protection (`state_dir`, `win_security`), the node's identity on
//! disk (`identity`), the TUN device (`tun_device`), routes (`routes`, and `route_table` for
//! peers' networks and the exit node), forwarding for peers (`forwarding`), what a crash
//! leaves removed (`janitor`) and network change watching (`netwatch`).

pub mod forwarding;
pub mod identity;
#[cfg(target_os = "linux")]
pub mod janitor;
pub mod netwatch;
pub mod os_dns;
#[cfg(any(all(unix, not(target_os = "macos")), test))]
pub mod resolvers;
pub mod route_table;
pub mod routes;
pub mod service_notify;
pub mod state_dir;
pub mod tun_device;
#[cfg(windows)]
pub mod win_security;
#[cfg(windows)]
pub mod win_service;

//! The UI's TypeScript types (`ui/src/bindings.ts`), generated from the Rust types the app
//! sends it. A test fails when the committed file differs from what the types generate;
//! `PINHOLE_UPDATE_BINDINGS=1 cargo test -p pinhole-app bindings` rewrites it.

use crate::settings::Settings;
use crate::view::{Action, ActionError, DaemonLink, View};
use pinhole_proto::ipc::{
    Candidate, Connection, ControlCheck, DnsStatus, EndpointKind, ExitNodeStatus, LoginPrompt, Nat,
    NetcheckReport, PeerStatus, PingReply, PortMapCheck, RegionLatency, SelfStatus, State, Status,
};
use ts_rs::{Config, TS};

/// The whole file.
pub fn typescript() -> String {
    // JSON numbers: byte counters (u64) stay far below 2^53.
    let cfg = Config::new().with_large_int("number");
    let decls = [
        View::decl(&cfg),
        DaemonLink::decl(&cfg),
        Action::decl(&cfg),
        ActionError::decl(&cfg),
        Settings::decl(&cfg),
        Status::decl(&cfg),
        DnsStatus::decl(&cfg),
        State::decl(&cfg),
        LoginPrompt::decl(&cfg),
        SelfStatus::decl(&cfg),
        ExitNodeStatus::decl(&cfg),
        Nat::decl(&cfg),
        PeerStatus::decl(&cfg),
        Connection::decl(&cfg),
        Candidate::decl(&cfg),
        EndpointKind::decl(&cfg),
        PingReply::decl(&cfg),
        NetcheckReport::decl(&cfg),
        PortMapCheck::decl(&cfg),
        RegionLatency::decl(&cfg),
        ControlCheck::decl(&cfg),
    ];
    let mut out = String::from(
        "// Generated from the Rust types by src-tauri/src/bindings.rs: do not edit.\n\
         // PINHOLE_UPDATE_BINDINGS=1 cargo test -p pinhole-app bindings  rewrites it.\n",
    );
    for d in decls {
        out.push_str("\nexport ");
        out.push_str(d.trim());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_bindings_match_the_rust_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts");
        let fresh = super::typescript();
        if std::env::var_os("PINHOLE_UPDATE_BINDINGS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "ui/src/bindings.ts is stale: run PINHOLE_UPDATE_BINDINGS=1 cargo test -p pinhole-app bindings"
        );
    }
}

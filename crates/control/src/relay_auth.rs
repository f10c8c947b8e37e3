//! The embedded relay asks the store who may use it: a node key belongs to a registered,
//! unexpired node, and the node's account is the network it may reach.

use crate::state::now_ms;
use crate::store::Store;
use pinhole_proto::key::Key;
use pinhole_relay::{AuthError, AuthFuture, Authorizer, Grant};

/// Answers the relay from the coordination server's own database.
pub struct StoreAuthorizer {
    pub store: Store,
}

impl Authorizer for StoreAuthorizer {
    fn authorize<'a>(&'a self, key: &'a Key) -> AuthFuture<'a> {
        Box::pin(async move {
            let now = now_ms();
            let row = self
                .store
                .node_by_key(&key.to_base64(), now)
                .await
                .map_err(|e| AuthError(e.to_string()))?;
            Ok(row
                .filter(|r| r.expires_at.is_none_or(|e| e > now))
                .map(|r| Grant {
                    network: r.account_id.into(),
                }))
        })
    }
}

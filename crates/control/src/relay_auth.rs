//! The embedded relay asks the store who may use it: a node key belongs to a registered,
//! unexpired node, and the node's account is the network it may reach.

use crate::state::now_ms;
use crate::store::{Store, StoreError};
use pinhole_proto::key::Key;
use pinhole_relay::{AuthError, AuthFuture, Authorizer, Grant};

/// The network (account id) of the registered, unexpired node with `key`; none if there is no
/// such node. What every relay, embedded or separate, is told.
pub async fn network_of(store: &Store, key: &Key) -> Result<Option<String>, StoreError> {
    let now = now_ms();
    let row = store.node_by_key(&key.to_base64(), now).await?;
    Ok(row
        .filter(|r| r.expires_at.is_none_or(|e| e > now))
        .map(|r| r.account_id))
}

/// Answers the relay from the coordination server's own database.
pub struct StoreAuthorizer {
    pub store: Store,
}

impl Authorizer for StoreAuthorizer {
    fn authorize<'a>(&'a self, key: &'a Key) -> AuthFuture<'a> {
        Box::pin(async move {
            let network = network_of(&self.store, key)
                .await
                .map_err(|e| AuthError(e.to_string()))?;
            Ok(network.map(|n| Grant { network: n.into() }))
        })
    }
}

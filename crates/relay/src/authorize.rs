//! Who may use the relay: the coordination server decides (an [`Authorizer`]), the relay keeps
//! its answers for a while (an [`AuthCache`]) so that a reconnect storm does not become a storm
//! of questions to control.

use pinhole_proto::key::Key;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What control says about an authorised node: the network (account) it belongs to. The relay
/// forwards only between nodes of the same network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub network: Arc<str>,
}

/// Control could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot check the node key with the coordination server: {0}")]
pub struct AuthError(pub String);

/// The future an [`Authorizer`] answers with.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Grant>, AuthError>> + Send + 'a>>;

/// Asks the coordination server whether a node key belongs to a signed-in node.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(None)`: not a node control knows (unknown, removed, expired).
    fn authorize<'a>(&'a self, key: &'a Key) -> AuthFuture<'a>;
}

/// Answers of an [`Authorizer`], kept for `ttl` (refusals for a shorter time).
pub struct AuthCache {
    inner: Arc<dyn Authorizer>,
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Option<Grant>)>>,
}

/// How long a refusal is remembered: short, so that a node that just signed in gets in soon.
const REFUSAL_TTL: Duration = Duration::from_secs(2);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 4096;
/// Entries kept at most: past this, refusals are forgotten first, then everything (it is only
/// a cache; what a connected client was granted is kept by its connection).
pub const MAX_ENTRIES: usize = 65_536;

impl AuthCache {
    pub fn new(inner: Arc<dyn Authorizer>, ttl: Duration) -> Self {
        AuthCache {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The grant for `key`, from the cache while fresh, else from control.
    pub async fn check(&self, key: &Key) -> Result<Option<Grant>, AuthError> {
        let now = Instant::now();
        if let Some((at, grant)) = self.lock().get(key) {
            let ttl = if grant.is_some() {
                self.ttl
            } else {
                REFUSAL_TTL
            };
            if now.saturating_duration_since(*at) < ttl {
                return Ok(grant.clone());
            }
        }
        let answer = self.inner.authorize(key).await?;
        let mut entries = self.lock();
        if entries.len() >= SWEEP_AT {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.retain(|_, (_, grant)| grant.is_some());
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(*key, (Instant::now(), answer.clone()));
        Ok(answer)
    }

    /// Asks control again, bypassing the cache (to re-check connected clients).
    pub async fn recheck(&self, key: &Key) -> Result<Option<Grant>, AuthError> {
        self.forget(key);
        self.check(key).await
    }

    /// Drops what is known about `key` (control revoked it).
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Option<Grant>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fixed set of keys, for tests and for a relay without a coordination server.
#[derive(Default)]
pub struct StaticAuthorizer {
    keys: Mutex<HashMap<Key, Grant>>,
    /// Questions answered, to see the cache at work.
    pub asked: std::sync::atomic::AtomicU64,
}

impl StaticAuthorizer {
    pub fn allow(&self, key: Key, network: &str) {
        self.lock().insert(
            key,
            Grant {
                network: network.into(),
            },
        );
    }

    pub fn deny(&self, key: &Key) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Grant>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Authorizer for StaticAuthorizer {
    fn authorize<'a>(&'a self, key: &'a Key) -> AuthFuture<'a> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = self.lock().get(key).cloned();
        Box::pin(async move { Ok(answer) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn answers_are_cached_until_forgotten() {
        let auth = Arc::new(StaticAuthorizer::default());
        auth.allow(Key([1; 32]), "acme");
        let cache = AuthCache::new(auth.clone(), Duration::from_secs(60));
        for _ in 0..3 {
            let g = cache.check(&Key([1; 32])).await.unwrap();
            assert_eq!(g.unwrap().network.as_ref(), "acme");
        }
        assert_eq!(auth.asked.load(Ordering::Relaxed), 1);
        auth.deny(&Key([1; 32]));
        assert!(
            cache.check(&Key([1; 32])).await.unwrap().is_some(),
            "cached"
        );
        cache.forget(&Key([1; 32]));
        assert!(cache.check(&Key([1; 32])).await.unwrap().is_none());
        assert!(cache.recheck(&Key([2; 32])).await.unwrap().is_none());
    }
}

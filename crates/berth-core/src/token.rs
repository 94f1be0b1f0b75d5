//! Workspace tokens: 32 random bytes, base64url without padding; only the SHA-256 hash and the
//! first 8 characters are ever stored (REFERENCE.md §6.1).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use berth_domain::WorkspaceId;
use berth_store::NewToken;

/// A freshly minted token: the plaintext (shown once) and what the store keeps.
pub struct MintedToken {
    /// The plaintext, for the one response that shows it.
    pub plaintext: SecretString,
    /// Hash and prefix for the store.
    pub stored: NewToken,
}

/// Mints a new token.
pub fn mint() -> MintedToken {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the operating system random source failed");
    let plaintext = URL_SAFE_NO_PAD.encode(raw);
    let stored = NewToken {
        id: uuid::Uuid::new_v4(),
        hash: hash(&plaintext),
        prefix: plaintext[..8].to_owned(),
    };
    MintedToken {
        plaintext: SecretString::from(plaintext),
        stored,
    }
}

/// SHA-256 of a token's plaintext, as stored.
pub fn hash(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("prefix", &self.stored.prefix)
            .finish()
    }
}

impl MintedToken {
    /// The plaintext (only for the response that shows it once).
    pub fn expose(&self) -> &str {
        self.plaintext.expose_secret()
    }
}

/// Verified token hashes, so a workspace token is looked up in the database once per
/// [`TokenCache::ttl`] instead of on every heartbeat.
///
/// Revocation: this instance forgets a workspace's entries the moment it revokes one of its
/// tokens or removes the workspace ([`TokenCache::forget`]); a lookup that raced with that forget
/// is not cached (a generation check). A revocation on another instance sharing the database
/// takes effect here within the TTL. Only verified hashes are kept — a wrong token always asks
/// the database — and at most [`TokenCache::CAPACITY`] of them.
#[derive(Debug)]
pub(crate) struct TokenCache {
    ttl: Duration,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<[u8; 32], (WorkspaceId, Instant)>,
    /// Bumped by every forget: a lookup that began before it does not insert.
    generation: u64,
}

impl TokenCache {
    /// Entries kept at most (a hundred thousand agents and more fit).
    pub(crate) const CAPACITY: usize = 262_144;

    /// A cache whose entries live `ttl` (zero: no caching).
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The owner of a verified, still fresh hash; else the generation to pass to [`Self::insert`].
    pub(crate) fn get(&self, hash: &[u8; 32]) -> Result<WorkspaceId, u64> {
        let inner = self.lock();
        match inner.entries.get(hash) {
            Some((owner, at)) if at.elapsed() < self.ttl => Ok(*owner),
            _ => Err(inner.generation),
        }
    }

    /// Remembers a hash the database verified, unless a forget happened since `generation`.
    pub(crate) fn insert(&self, hash: [u8; 32], owner: WorkspaceId, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= Self::CAPACITY {
            let ttl = self.ttl;
            inner.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if inner.entries.len() >= Self::CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(hash, (owner, Instant::now()));
    }

    /// Forgets every cached token of these workspaces (a revoke, a rotation, a delete).
    pub(crate) fn forget(&self, workspaces: &[WorkspaceId]) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner
            .entries
            .retain(|_, (owner, _)| !workspaces.contains(owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_chars_and_stored_as_hash_and_prefix() {
        let t = mint();
        assert_eq!(t.expose().len(), 43);
        assert!(
            t.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(t.stored.prefix, &t.expose()[..8]);
        assert_eq!(t.stored.hash, hash(t.expose()));
        assert_ne!(mint().expose(), t.expose());
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn the_cache_keeps_verified_hashes_until_forgotten() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let (a, b) = (WorkspaceId::new_v4(), WorkspaceId::new_v4());
        let g = cache.get(&[1; 32]).expect_err("empty");
        cache.insert([1; 32], a, g);
        cache.insert([2; 32], b, g);
        assert_eq!(cache.get(&[1; 32]), Ok(a));
        cache.forget(&[a]);
        assert!(cache.get(&[1; 32]).is_err(), "a's token is forgotten");
        assert_eq!(cache.get(&[2; 32]), Ok(b), "b's is kept");
        // A lookup that began before the forget does not put the revoked token back.
        cache.insert([1; 32], a, g);
        assert!(cache.get(&[1; 32]).is_err());
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_caches_nothing() {
        let cache = TokenCache::new(Duration::from_millis(20));
        let a = WorkspaceId::new_v4();
        let g = cache.get(&[1; 32]).expect_err("empty");
        cache.insert([1; 32], a, g);
        assert_eq!(cache.get(&[1; 32]), Ok(a));
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&[1; 32]).is_err(), "expired");
        let off = TokenCache::new(Duration::ZERO);
        off.insert([1; 32], a, 0);
        assert!(off.get(&[1; 32]).is_err());
    }
}

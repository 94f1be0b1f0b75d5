//! Workspace tokens: 32 random bytes, base64url without padding; only the SHA-256 hash and the
//! first 8 characters are ever stored (REFERENCE.md §6.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

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
}

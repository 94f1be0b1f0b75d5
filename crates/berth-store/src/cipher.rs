//! The secret cipher: XChaCha20-Poly1305 under a key ring with key ids (DECISIONS.md §4).
//!
//! Every encrypted value is stored beside the id of the key that sealed it, so keys can be rotated
//! and old rows re-encrypted online. The stored bytes are `nonce (24) || ciphertext || tag (16)`.
//! Each value is bound to its row by associated data (for a workspace secret: the workspace id and
//! the key name), so a ciphertext copied into another row does not decrypt.
//!
//! Key ring text format (a key file, or the `BERTH_SECRET_KEYS` value): one key per line,
//! `<key-id>:<base64 of 32 bytes>`; blank lines and `#` comments are ignored; the FIRST key is the
//! active one that seals new values, the others only open old ones.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Why a key ring could not be built or a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The key ring text is malformed.
    #[error("invalid secret key ring: {0}")]
    InvalidKeyRing(String),
    /// A value was sealed with a key this server does not have.
    #[error("secret was encrypted with key {0:?}, which this server does not have")]
    UnknownKey(String),
    /// The value failed authentication: corrupted, tampered with, or moved to another row.
    #[error("secret sealed with key {0:?} failed to decrypt")]
    Corrupt(String),
    /// The opened value is not UTF-8.
    #[error("secret sealed with key {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// A sealed value and the id of the key that sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the sealing key.
    pub key_id: String,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The keys this server knows, and which one seals new values.
#[derive(Clone)]
pub struct KeyRing {
    active: String,
    keys: HashMap<String, SecretSlice<u8>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("key_ids", &ids)
            .finish()
    }
}

impl KeyRing {
    /// Parses the key ring text format described in the module docs.
    pub fn parse(text: &SecretString) -> Result<Self, CipherError> {
        let mut active = None;
        let mut keys = HashMap::new();
        for (n, raw) in text.expose_secret().lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| CipherError::InvalidKeyRing(format!("line {}: {why}", n + 1));
            let (id, b64) = line
                .split_once(':')
                .ok_or_else(|| bad("expected <key-id>:<base64>"))?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("key id must be non-empty [A-Za-z0-9_-]"));
            }
            let key = STANDARD
                .decode(b64.trim())
                .map_err(|_| bad("key is not valid base64"))?;
            if key.len() != KEY_LEN {
                return Err(bad("key must decode to exactly 32 bytes"));
            }
            if keys.insert(id.to_owned(), SecretSlice::from(key)).is_some() {
                return Err(bad("duplicate key id"));
            }
            active.get_or_insert_with(|| id.to_owned());
        }
        let active = active.ok_or_else(|| CipherError::InvalidKeyRing("no key".into()))?;
        Ok(Self { active, keys })
    }

    /// A fresh random key in the text format, for a key file written on first start.
    pub fn generate_line(key_id: &str) -> SecretString {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).expect("the operating system random source failed");
        SecretString::from(format!("{key_id}:{}", STANDARD.encode(key)))
    }

    /// The id of the key that seals new values.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    fn cipher(&self, key_id: &str) -> Result<XChaCha20Poly1305, CipherError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| CipherError::UnknownKey(key_id.to_owned()))?;
        XChaCha20Poly1305::new_from_slice(key.expose_secret())
            .map_err(|_| CipherError::InvalidKeyRing(format!("key {key_id:?} has a bad length")))
    }

    /// Seals `plaintext` with the active key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let cipher = self
            .cipher(&self.active)
            .expect("the active key is always in the ring");
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system random source failed");
        let nonce_ga = XNonce::from(nonce);
        let ct = cipher
            .encrypt(
                &nonce_ga,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut bytes = Vec::with_capacity(NONCE_LEN + ct.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        Sealed {
            key_id: self.active.clone(),
            bytes,
        }
    }

    /// Opens a sealed value; fails on an unknown key or a value that does not authenticate.
    pub fn open(
        &self,
        sealed_key_id: &str,
        bytes: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let cipher = self.cipher(sealed_key_id)?;
        if bytes.len() < NONCE_LEN {
            return Err(CipherError::Corrupt(sealed_key_id.to_owned()));
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CipherError::Corrupt(sealed_key_id.to_owned()))?;
        cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| CipherError::Corrupt(sealed_key_id.to_owned()))
    }

    /// Seals a UTF-8 secret.
    pub fn seal_str(&self, plaintext: &SecretString, aad: &[u8]) -> Sealed {
        self.seal(plaintext.expose_secret().as_bytes(), aad)
    }

    /// Opens a UTF-8 secret.
    pub fn open_str(
        &self,
        sealed_key_id: &str,
        bytes: &[u8],
        aad: &[u8],
    ) -> Result<SecretString, CipherError> {
        let plain = self.open(sealed_key_id, bytes, aad)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| CipherError::NotUtf8(sealed_key_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(&SecretString::from(text.to_owned())).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let line = KeyRing::generate_line("k1");
        let r = KeyRing::parse(&line).unwrap();
        let s = r.seal(b"hunter2", b"ws-1/API_KEY");
        assert_eq!(s.key_id, "k1");
        assert_eq!(s.bytes.len(), 24 + 7 + 16);
        assert!(!s.bytes.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(r.open("k1", &s.bytes, b"ws-1/API_KEY").unwrap(), b"hunter2");
        // Moved to another row: does not authenticate.
        assert!(matches!(
            r.open("k1", &s.bytes, b"ws-2/API_KEY"),
            Err(CipherError::Corrupt(_))
        ));
        // Tampered.
        let mut t = s.bytes.clone();
        t[30] ^= 1;
        assert!(matches!(
            r.open("k1", &t, b"ws-1/API_KEY"),
            Err(CipherError::Corrupt(_))
        ));
        assert!(matches!(
            r.open("k1", &t[..10], b""),
            Err(CipherError::Corrupt(_))
        ));
        // Nonces are random: two seals differ.
        assert_ne!(r.seal(b"x", b"").bytes, r.seal(b"x", b"").bytes);
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let old = KeyRing::generate_line("old");
        let new = KeyRing::generate_line("new");
        let r1 = KeyRing::parse(&old).unwrap();
        let sealed = r1.seal(b"v", b"a");
        let both = format!(
            "{}\n# old key, kept to open old rows\n{}\n",
            new.expose_secret(),
            old.expose_secret()
        );
        let r2 = ring(&both);
        assert_eq!(r2.active_key_id(), "new");
        assert_eq!(r2.open("old", &sealed.bytes, b"a").unwrap(), b"v");
        assert_eq!(r2.seal(b"v", b"a").key_id, "new");
        let only_new = KeyRing::parse(&new).unwrap();
        let err = only_new.open("old", &sealed.bytes, b"a").unwrap_err();
        assert!(matches!(&err, CipherError::UnknownKey(id) if id == "old"));
        assert_eq!(
            err.to_string(),
            "secret was encrypted with key \"old\", which this server does not have"
        );
    }

    #[test]
    fn rejects_malformed_rings() {
        for bad in [
            "",
            "# only a comment",
            "nokey",
            "k1:not-base64!",
            "k1:AAAA",
            ":AAAA",
            "k 1:AAAA",
        ] {
            assert!(
                KeyRing::parse(&SecretString::from(bad.to_owned())).is_err(),
                "{bad:?}"
            );
        }
        let l = KeyRing::generate_line("dup");
        let twice = format!("{}\n{}", l.expose_secret(), l.expose_secret());
        assert!(KeyRing::parse(&SecretString::from(twice)).is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let l = KeyRing::generate_line("k1");
        let r = KeyRing::parse(&l).unwrap();
        let b64 = l.expose_secret().split_once(':').unwrap().1.to_owned();
        assert!(!format!("{r:?}").contains(&b64));
    }
}

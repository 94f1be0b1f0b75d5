//! Workspace and global secrets (REFERENCE.md §2.17–2.18, §7), the model/provider secrets, and
//! the online re-encryption of every sealed value to the active key.
//!
//! Values are sealed by the store with its key ring; they never leave this module except as
//! [`SecretString`]s, and never appear in events (the audit records carry the key and an 8-hex
//! SHA-256 prefix of the value), logs or errors.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_domain::WorkspaceId;
use berth_domain::provider::derive_provider_from_model_slug;
use berth_store::{CipherError, OpenedSecret, ReencryptReport, SecretInfo, SecretScope};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::service::WorkspaceService;

/// Largest secret value accepted, in bytes.
pub const SECRET_VALUE_CAP: usize = 64 * 1024;
/// Longest secret key accepted.
pub const SECRET_KEY_CAP: usize = 255;
/// The workspace secret holding the model slug.
pub const MODEL_KEY: &str = "MODEL";
/// The workspace secret holding the LLM provider.
pub const PROVIDER_KEY: &str = "LLM_PROVIDER";
/// Restart cycles a global secret change lets run at once (§12 #66: no thundering herd).
pub const GLOBAL_RESTART_CONCURRENCY: usize = 4;
/// Rows per transaction of a re-encryption pass when the caller does not say.
pub const DEFAULT_REENCRYPT_BATCH: u32 = 100;

/// Why a secrets operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key is empty, too long, or not an environment variable name.
    #[error("invalid secret key: must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 characters")]
    InvalidKey,
    /// The value is empty.
    #[error("secret value must not be empty")]
    EmptyValue,
    /// The value is larger than [`SECRET_VALUE_CAP`].
    #[error("secret value must be at most 64 KiB")]
    ValueTooLarge,
    /// A model or provider value with control characters.
    #[error("{0} must not contain control characters")]
    InvalidText(&'static str),
    /// The workspace is missing or removed.
    #[error("workspace not found")]
    WorkspaceNotFound,
    /// No such secret.
    #[error("secret not found")]
    NotFound,
    /// A stored value cannot be opened: sealed with a key this server does not have, or
    /// corrupt. `failed_keys` are `workspace:K` / `global:K`.
    #[error("{}", unreadable_message(key_id.as_deref()))]
    Unreadable {
        /// The unknown key id, when that is the reason.
        key_id: Option<String>,
        /// The secrets that failed.
        failed_keys: Vec<String>,
    },
    /// The store failed.
    #[error("{context}")]
    Store {
        /// The public message.
        context: &'static str,
        /// The cause (logged, never sent).
        #[source]
        source: berth_store::Error,
    },
}

fn unreadable_message(key_id: Option<&str>) -> String {
    match key_id {
        Some(id) => format!("secret sealed with key {id:?} that this server does not have"),
        None => "one or more secrets failed to decrypt; refusing to return partial bundle".into(),
    }
}

fn store_err(context: &'static str) -> impl FnOnce(berth_store::Error) -> SecretError {
    move |source| SecretError::Store { context, source }
}

/// A secret as listed (never its value).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretEntry {
    /// The key.
    pub key: String,
    /// `workspace` or `global`.
    pub scope: &'static str,
    /// First written.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
}

impl SecretEntry {
    fn from_info(info: SecretInfo, scope: &'static str) -> Self {
        Self {
            key: info.key,
            scope,
            created_at: info.created_at,
            updated_at: info.updated_at,
        }
    }
}

/// Whether `key` is an acceptable secret key: an environment variable name of at most
/// [`SECRET_KEY_CAP`] characters (so no empty keys, no control characters, no `=`).
pub fn is_secret_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= SECRET_KEY_CAP
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate(key: &str, value: &SecretString) -> Result<(), SecretError> {
    if !is_secret_key(key) {
        return Err(SecretError::InvalidKey);
    }
    let v = value.expose_secret();
    if v.is_empty() {
        return Err(SecretError::EmptyValue);
    }
    if v.len() > SECRET_VALUE_CAP {
        return Err(SecretError::ValueTooLarge);
    }
    Ok(())
}

/// The audit payload of a write: the key and the first 8 hex characters of the value's
/// SHA-256, never the value.
fn set_audit(key: &str, value: &SecretString, scope: &'static str) -> serde_json::Value {
    let digest = Sha256::digest(value.expose_secret().as_bytes());
    let prefix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    json!({"key": key, "scope": scope, "value_sha256_prefix": prefix})
}

fn delete_audit(key: &str, scope: &'static str) -> serde_json::Value {
    json!({"key": key, "scope": scope})
}

/// Splits opened secrets into values and failures (`<scope>:<key>`, and the first unknown key id).
fn collect(
    opened: Vec<OpenedSecret>,
    scope: &str,
    into: &mut BTreeMap<String, SecretString>,
    failed: &mut Vec<String>,
    unknown_key: &mut Option<String>,
) {
    for s in opened {
        match s.value {
            Ok(v) => {
                into.insert(s.key, v);
            }
            Err(e) => {
                if let CipherError::UnknownKey(id) = &e {
                    unknown_key.get_or_insert_with(|| id.clone());
                }
                tracing::error!(secret.scope = scope, secret.key = %s.key, key_id = %s.key_id, error = %e, "secret cannot be opened");
                failed.push(format!("{scope}:{}", s.key));
            }
        }
    }
}

impl WorkspaceService {
    /// `GET /workspaces/{id}/secrets`: workspace secrets first (by key), then the global ones
    /// it does not override. A failing global read leaves only the workspace entries (as the
    /// reference does).
    pub async fn list_secrets(&self, id: WorkspaceId) -> Result<Vec<SecretEntry>, SecretError> {
        let own = self
            .store
            .list_secrets(SecretScope::Workspace(id))
            .await
            .map_err(store_err("query failed"))?;
        let globals = match self.store.list_secrets(SecretScope::Global).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "global secrets could not be listed");
                Vec::new()
            }
        };
        let mut list: Vec<SecretEntry> = Vec::with_capacity(own.len() + globals.len());
        let own_keys: std::collections::HashSet<String> =
            own.iter().map(|s| s.key.clone()).collect();
        list.extend(
            own.into_iter()
                .map(|s| SecretEntry::from_info(s, "workspace")),
        );
        list.extend(
            globals
                .into_iter()
                .filter(|g| !own_keys.contains(&g.key))
                .map(|s| SecretEntry::from_info(s, "global")),
        );
        Ok(list)
    }

    /// `GET /workspaces/{id}/secrets/values`: the global secrets overridden by the workspace's,
    /// decrypted. Any value that cannot be opened fails the whole bundle (never a partial one).
    pub async fn secret_values(
        &self,
        id: WorkspaceId,
    ) -> Result<BTreeMap<String, SecretString>, SecretError> {
        let globals = self
            .store
            .open_secrets(SecretScope::Global)
            .await
            .map_err(store_err("query failed"))?;
        let own = self
            .store
            .open_secrets(SecretScope::Workspace(id))
            .await
            .map_err(store_err("query failed"))?;
        let mut values = BTreeMap::new();
        let mut failed = Vec::new();
        let mut unknown_key = None;
        collect(
            globals,
            "global",
            &mut values,
            &mut failed,
            &mut unknown_key,
        );
        collect(own, "workspace", &mut values, &mut failed, &mut unknown_key);
        if !failed.is_empty() {
            return Err(SecretError::Unreadable {
                key_id: unknown_key,
                failed_keys: failed,
            });
        }
        Ok(values)
    }

    /// One workspace secret (no global fallback), e.g. `MODEL`.
    pub async fn workspace_secret(
        &self,
        id: WorkspaceId,
        key: &str,
    ) -> Result<Option<SecretString>, SecretError> {
        let opened = self
            .store
            .open_secrets(SecretScope::Workspace(id))
            .await
            .map_err(store_err("query failed"))?;
        let Some(s) = opened.into_iter().find(|s| s.key == key) else {
            return Ok(None);
        };
        match s.value {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::error!(workspace.id = %id, secret.key = %s.key, key_id = %s.key_id, error = %e, "secret cannot be opened");
                Err(SecretError::Unreadable {
                    key_id: matches!(e, CipherError::UnknownKey(_)).then_some(s.key_id),
                    failed_keys: vec![format!("workspace:{}", s.key)],
                })
            }
        }
    }

    /// `POST|PUT /workspaces/{id}/secrets`: stores the secret (with its `secret.set` audit event)
    /// and asks for a coalesced restart.
    pub async fn set_secret(
        &self,
        id: WorkspaceId,
        key: &str,
        value: SecretString,
    ) -> Result<(), SecretError> {
        validate(key, &value)?;
        self.put_workspace_secret(id, key, value, "failed to save secret")
            .await?;
        self.request_restart(id).await;
        Ok(())
    }

    async fn put_workspace_secret(
        &self,
        id: WorkspaceId,
        key: &str,
        value: SecretString,
        context: &'static str,
    ) -> Result<(), SecretError> {
        let audit = set_audit(key, &value, "workspace");
        match self
            .store
            .set_secret(SecretScope::Workspace(id), key.to_owned(), value, audit)
            .await
        {
            Ok(()) => {
                tracing::info!(workspace.id = %id, secret.key = %key, "secret saved");
                Ok(())
            }
            Err(berth_store::Error::NotFound) => Err(SecretError::WorkspaceNotFound),
            Err(e) => Err(store_err(context)(e)),
        }
    }

    async fn remove_workspace_secret(
        &self,
        id: WorkspaceId,
        key: &str,
        context: &'static str,
    ) -> Result<bool, SecretError> {
        let deleted = self
            .store
            .delete_secret(
                SecretScope::Workspace(id),
                key.to_owned(),
                delete_audit(key, "workspace"),
            )
            .await
            .map_err(store_err(context))?;
        if deleted {
            tracing::info!(workspace.id = %id, secret.key = %key, "secret deleted");
        }
        Ok(deleted)
    }

    /// `DELETE /workspaces/{id}/secrets/{key}`.
    pub async fn delete_secret(&self, id: WorkspaceId, key: &str) -> Result<(), SecretError> {
        if !is_secret_key(key) {
            return Err(SecretError::NotFound);
        }
        if !self
            .remove_workspace_secret(id, key, "failed to delete secret")
            .await?
        {
            return Err(SecretError::NotFound);
        }
        self.request_restart(id).await;
        Ok(())
    }

    /// `PUT /workspaces/{id}/model`: `""` clears `MODEL`; otherwise stores it and, when the slug
    /// names a known provider, `LLM_PROVIDER` too. Returns the derived provider.
    pub async fn set_model(
        &self,
        id: WorkspaceId,
        model: &str,
    ) -> Result<Option<&'static str>, SecretError> {
        if model.is_empty() {
            self.remove_workspace_secret(id, MODEL_KEY, "failed to clear model")
                .await?;
            self.request_restart(id).await;
            return Ok(None);
        }
        check_text("model", model)?;
        self.put_workspace_secret(
            id,
            MODEL_KEY,
            SecretString::from(model.to_owned()),
            "failed to save model",
        )
        .await?;
        let provider = derive_provider_from_model_slug(model);
        if let Some(p) = provider {
            self.put_workspace_secret(
                id,
                PROVIDER_KEY,
                SecretString::from(p.to_owned()),
                "failed to save model",
            )
            .await?;
        }
        self.request_restart(id).await;
        Ok(provider)
    }

    /// `PUT /workspaces/{id}/provider`: `""` clears `LLM_PROVIDER`; otherwise stores it.
    pub async fn set_provider(&self, id: WorkspaceId, provider: &str) -> Result<(), SecretError> {
        if provider.is_empty() {
            self.remove_workspace_secret(id, PROVIDER_KEY, "failed to clear provider")
                .await?;
        } else {
            check_text("provider", provider)?;
            self.put_workspace_secret(
                id,
                PROVIDER_KEY,
                SecretString::from(provider.to_owned()),
                "failed to save provider",
            )
            .await?;
        }
        self.request_restart(id).await;
        Ok(())
    }

    /// `GET /settings/secrets`.
    pub async fn list_global_secrets(&self) -> Result<Vec<SecretEntry>, SecretError> {
        Ok(self
            .store
            .list_secrets(SecretScope::Global)
            .await
            .map_err(store_err("query failed"))?
            .into_iter()
            .map(|s| SecretEntry::from_info(s, "global"))
            .collect())
    }

    /// `POST|PUT /settings/secrets`: stores the global secret, then restarts the workspaces it
    /// affects in the background, at most [`GLOBAL_RESTART_CONCURRENCY`] at a time.
    pub async fn set_global_secret(
        &self,
        key: &str,
        value: SecretString,
    ) -> Result<(), SecretError> {
        validate(key, &value)?;
        let audit = set_audit(key, &value, "global");
        self.store
            .set_secret(SecretScope::Global, key.to_owned(), value, audit)
            .await
            .map_err(store_err("failed to save"))?;
        tracing::info!(secret.key = %key, "global secret saved");
        self.restart_dependents(key).await;
        Ok(())
    }

    /// `DELETE /settings/secrets/{key}`.
    pub async fn delete_global_secret(&self, key: &str) -> Result<(), SecretError> {
        if !is_secret_key(key) {
            return Err(SecretError::NotFound);
        }
        let deleted = self
            .store
            .delete_secret(
                SecretScope::Global,
                key.to_owned(),
                delete_audit(key, "global"),
            )
            .await
            .map_err(store_err("failed to delete"))?;
        if !deleted {
            return Err(SecretError::NotFound);
        }
        tracing::info!(secret.key = %key, "global secret deleted");
        self.restart_dependents(key).await;
        Ok(())
    }

    /// The restart fan-out of a global secret change, in a background task: each affected
    /// workspace gets a coalesced restart request, but the task waits while
    /// [`GLOBAL_RESTART_CONCURRENCY`] or more restart cycles run.
    async fn restart_dependents(&self, key: &str) {
        if self.provisioner.kind() == berth_provision::BackendKind::None {
            return;
        }
        let svc = self.clone();
        let key = key.to_owned();
        self.spawn(async move {
            let ids = match svc.store.global_secret_dependents(key).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "global secret restart fan-out: lookup failed");
                    return;
                }
            };
            for id in ids {
                while svc.restarts_in_flight().await >= GLOBAL_RESTART_CONCURRENCY {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                svc.request_restart(id).await;
            }
        })
        .await;
    }

    /// Re-seals every sealed value that is not under the active key (workspace and global
    /// secrets, idempotent responses, inbound secrets), `batch_size` rows per transaction
    /// (`berth secrets rotate-key`, `POST /admin/secrets/rotate`). Safe to run while serving and
    /// to re-run after an interruption. `remaining_by_key_id` lists what is still under an old
    /// key afterwards (rows under a key this server lacks).
    pub async fn reencrypt_secrets(
        &self,
        batch_size: u32,
    ) -> Result<ReencryptReport, berth_store::Error> {
        let report = self.store.reencrypt(batch_size.max(1), None).await?;
        tracing::info!(
            rows = report.rows,
            active_key_id = %report.active_key_id,
            remaining = ?report.remaining_by_key_id,
            "secrets re-encrypted"
        );
        Ok(report)
    }
}

fn check_text(what: &'static str, value: &str) -> Result<(), SecretError> {
    if value.chars().any(char::is_control) {
        return Err(SecretError::InvalidText(what));
    }
    if value.len() > SECRET_VALUE_CAP {
        return Err(SecretError::ValueTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_environment_names() {
        for good in ["A", "_", "API_KEY", "a1", "_x_9"] {
            assert!(is_secret_key(good), "{good}");
        }
        let long = "K".repeat(SECRET_KEY_CAP + 1);
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "A\nB",
            "A\u{0}",
            "É",
            long.as_str(),
        ] {
            assert!(!is_secret_key(bad), "{bad:?}");
        }
        assert!(is_secret_key(&"K".repeat(SECRET_KEY_CAP)));
    }

    #[test]
    fn audit_payload_has_a_hash_prefix_not_the_value() {
        let v = SecretString::from("hunter2".to_owned());
        let audit = set_audit("PASSWORD", &v, "workspace");
        assert_eq!(audit["key"], "PASSWORD");
        // sha256("hunter2") = f52fbd32…
        assert_eq!(audit["value_sha256_prefix"], "f52fbd32");
        assert!(!audit.to_string().contains("hunter2"));
    }

    #[test]
    fn values_are_bounded() {
        let ok = SecretString::from("x".repeat(SECRET_VALUE_CAP));
        assert!(validate("K", &ok).is_ok());
        let big = SecretString::from("x".repeat(SECRET_VALUE_CAP + 1));
        assert!(matches!(
            validate("K", &big),
            Err(SecretError::ValueTooLarge)
        ));
        assert!(matches!(
            validate("K", &SecretString::from(String::new())),
            Err(SecretError::EmptyValue)
        ));
        assert!(matches!(validate("", &ok), Err(SecretError::InvalidKey)));
    }
}

//! Workspace and global secrets, model and provider (REFERENCE.md §2.17–2.18), re-encryption.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretEntry {
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// Always `true`.
    pub has_value: bool,
    /// The name.
    pub key: String,
    /// `workspace` or `global`.
    pub scope: String,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// `POST`/`PUT` body of the secret routes: both non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetSecret {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// 200 of a secret set or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretChanged {
    /// The name.
    pub key: String,
    /// `global` on the global routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `saved` or `deleted`.
    pub status: String,
}

/// `GET /workspaces/{id}/secrets/values`: name → value.
pub type SecretValues = BTreeMap<String, String>;

/// `GET /workspaces/{id}/model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelBody {
    /// The model (`""` = default).
    pub model: String,
    /// `workspace_secrets` or `default`.
    pub source: String,
}

/// `GET /workspaces/{id}/provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProviderBody {
    /// The provider (`""` = default).
    pub provider: String,
    /// `workspace_secrets` or `default`.
    pub source: String,
}

/// `PUT /workspaces/{id}/model` body (`null`/absent/`""` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetModel {
    /// The model.
    #[serde(default)]
    pub model: Option<String>,
}

/// `PUT /workspaces/{id}/provider` body (`null`/absent/`""` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetProvider {
    /// The provider.
    #[serde(default)]
    pub provider: Option<String>,
}

/// 200 of `PUT …/model` and `PUT …/provider`: `saved` with the value, or `cleared`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SettingSaved {
    /// The model (`PUT …/model`, `saved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider (`PUT …/provider`, `saved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `saved` or `cleared`.
    pub status: String,
}

/// `POST /admin/secrets/rotate` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotateSecrets {
    /// Rows per transaction, 1–10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// 200 of `POST /admin/secrets/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReencryptReport {
    /// The key every re-sealed row now uses.
    pub active_key_id: String,
    /// Sealed rows still under another key, by key id (empty when complete).
    pub remaining_by_key_id: BTreeMap<String, u64>,
    /// Rows re-sealed by this pass.
    pub rows: u64,
}

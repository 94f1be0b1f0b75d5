//! `/templates`: the listing and the import (REFERENCE-2.md §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One valid template of the listing. Optional lists and the timeout are omitted when empty;
/// `skills` is `[]`, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// What it is for.
    pub description: String,
    /// The directory name.
    pub id: String,
    /// The default model.
    pub model: String,
    /// Selectable models (free-form entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<Value>,
    /// Display name.
    pub name: String,
    /// Provider registry entries (free-form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub provider_registry: Vec<Value>,
    /// Providers it supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// Provisioning deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_timeout_seconds: Option<i64>,
    /// Environment variables the agent needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_env: Vec<String>,
    /// Runtime (without a `-default` suffix).
    pub runtime: String,
    /// `skills.len()`.
    pub skill_count: usize,
    /// Skill names.
    pub skills: Vec<String>,
    /// Tier.
    pub tier: Option<i64>,
}

/// A malformed template in the listing (after the valid ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TemplateInvalid {
    /// `TEMPLATE_INVALID`.
    pub code: String,
    /// What is wrong.
    pub error: String,
    /// The directory name.
    pub id: String,
}

/// One element of `GET /templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TemplateListing {
    /// A malformed template (has `code`).
    Invalid(TemplateInvalid),
    /// A valid template.
    Valid(Box<Template>),
}

/// `POST /templates/import` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportTemplate {
    /// Display name (the id is derived from it).
    pub name: String,
    /// Relative path → content.
    pub files: BTreeMap<String, String>,
    /// Runtime written into a generated `config.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Model written into a generated `config.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// 201 of `POST /templates/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportedTemplate {
    /// The new template's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `imported`.
    pub status: String,
}

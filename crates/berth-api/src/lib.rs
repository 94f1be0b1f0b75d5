#![doc = include_str!("../README.md")]

pub mod a2a;
pub mod activity;
pub mod console;
pub mod error;
pub mod events;
pub mod inside;
pub mod registry;
pub mod secrets;
pub mod system;
pub mod templates;
pub mod tokens;
pub mod workspaces;

pub use berth_domain::WorkspaceId;
pub use berth_domain::compute::{Compute, ComputeDisplay, ComputeVolume};
pub use berth_domain::status::WorkspaceStatus;
pub use error::{ConfirmationRequired, ErrorBody, WorkspaceGone};

/// Deserializes `null` as the type's default, like Go's JSON binding does for zero values. Use
/// it as `#[serde(default, deserialize_with = "berth_api::nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a field that distinguishes absent (`None`, with `#[serde(default)]`) from `null`
/// (`Some(None)`) from a value (`Some(Some(v))`): the list-only fields of
/// [`workspaces::Workspace`] are `null` when unset and absent from `GET /workspaces/{id}`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Option::<T>::deserialize(d).map(Some)
}

/// `{"status": "<word>"}`: the answer of the actions that report nothing else (`updated`,
/// `logged`, `sent`, `saved`, `revoked`, `hibernated`, …).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StatusResponse {
    /// What happened.
    pub status: String,
}

impl StatusResponse {
    /// `{"status": status}`.
    pub fn new(status: impl Into<String>) -> Self {
        Self {
            status: status.into(),
        }
    }
}

//! `GET /workspaces/{id}/display` (REFERENCE.md §2.20): whether a workspace has a remote desktop.
//!
//! berth has no display backend and no `display/session/*` proxy, so a workspace never has a
//! display session to offer: without a configured display it is `display_not_enabled`, and with
//! one (a `compute.display.mode` other than `none`) it is reported as configured but
//! unavailable, the reference's answer for a display whose machine is not running. The
//! reference's `available: true` (a control-plane machine with an `instance_id`) would point
//! clients at a session route berth does not serve.

use berth_domain::WorkspaceId;
use berth_domain::compute::{Compute, ComputeDisplay};
use berth_domain::status::WorkspaceStatus;
use serde_json::Value;

use crate::service::WorkspaceService;

/// What a workspace's display is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayStatus {
    /// No display is configured (`compute.display.mode` empty or `none`).
    NotEnabled,
    /// A display is configured, but there is no session to connect to.
    Unavailable(ComputeDisplay),
}

/// Why the display could not be reported.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// No such workspace, or it was removed.
    #[error("workspace not found")]
    NotFound,
    /// The stored compute configuration does not parse or is not valid.
    #[error("invalid display config")]
    Invalid,
    /// The store failed.
    #[error("failed to load display config")]
    Store(#[source] berth_store::Error),
}

/// The display settings of a stored `compute` document; `None` when it does not parse or fails
/// the create-time validation (REFERENCE.md §3.6).
fn stored_display(compute: &Value) -> Option<ComputeDisplay> {
    // Only an object is a compute document (serde would also bind the struct from an array).
    let compute = match compute {
        Value::Null => Compute::default(),
        Value::Object(_) => serde_json::from_value::<Compute>(compute.clone()).ok()?,
        _ => return None,
    };
    compute.validate().ok()?;
    Some(compute.display)
}

impl WorkspaceService {
    /// The display of a live workspace.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn display(&self, id: WorkspaceId) -> Result<DisplayStatus, DisplayError> {
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(DisplayError::Store)?
            .filter(|w| w.status != WorkspaceStatus::Removed)
            .ok_or(DisplayError::NotFound)?;
        let Some(display) = stored_display(&row.compute) else {
            tracing::error!("stored compute configuration is invalid");
            return Err(DisplayError::Invalid);
        };
        Ok(match display.mode.as_str() {
            "" | "none" => DisplayStatus::NotEnabled,
            _ => DisplayStatus::Unavailable(display),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_compute_is_read_and_checked() {
        assert_eq!(stored_display(&json!({})), Some(ComputeDisplay::default()));
        assert_eq!(
            stored_display(&Value::Null),
            Some(ComputeDisplay::default())
        );
        let d = stored_display(
            &json!({"display": {"mode": "desktop-control", "width": 1280, "height": 800}}),
        )
        .expect("valid");
        assert_eq!(
            (d.mode.as_str(), d.width, d.height, d.protocol.as_str()),
            ("desktop-control", 1280, 800, "")
        );
        assert_eq!(stored_display(&json!([])), None);
        assert_eq!(stored_display(&json!({"display": {"mode": 5}})), None);
        assert_eq!(stored_display(&json!({"display": {"mode": "vnc"}})), None);
        assert_eq!(stored_display(&json!({"display": {"width": 10}})), None);
    }
}

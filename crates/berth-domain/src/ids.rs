//! Workspace identifiers.
//!
//! The reference accepts any form `uuid.Parse` accepts (upper case, braces, 32 hex digits without
//! dashes, a `urn:uuid:` prefix) and always prints the lower-case hyphenated form; so does berth,
//! on every route (the reference validated ids inconsistently, REFERENCE.md §12 #19).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one workspace: a UUID, always displayed lower-case and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(transparent)]
pub struct WorkspaceId(Uuid);

/// A string that is not a UUID in any accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workspace ID")]
pub struct InvalidWorkspaceId;

impl WorkspaceId {
    /// A fresh random (v4) id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses any form the reference accepts.
    pub fn parse(s: &str) -> Result<Self, InvalidWorkspaceId> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| InvalidWorkspaceId)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The first 12 characters of the hyphenated form (the reference's container-name prefix).
    pub fn short(&self) -> String {
        self.0.hyphenated().to_string()[..12].to_owned()
    }
}

impl From<Uuid> for WorkspaceId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl From<WorkspaceId> for Uuid {
    fn from(id: WorkspaceId) -> Self {
        id.0
    }
}

impl FromStr for WorkspaceId {
    type Err = InvalidWorkspaceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_uuid_parse_accepts() {
        let canonical = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
        for form in [
            canonical,
            "6F1D2C3B-4A5E-4F60-8A7B-9C0D1E2F3A4B",
            "{6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b}",
            "6f1d2c3b4a5e4f608a7b9c0d1e2f3a4b",
            "urn:uuid:6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
        ] {
            let id = WorkspaceId::parse(form).expect(form);
            assert_eq!(id.to_string(), canonical);
        }
        assert_eq!(
            WorkspaceId::parse(canonical).unwrap().short(),
            "6f1d2c3b-4a5"
        );
    }

    #[test]
    fn rejects_non_uuids() {
        for bad in [
            "",
            "x",
            "6f1d2c3b-4a5e-4f60-8a7b",
            "../etc/passwd",
            "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4g",
        ] {
            assert_eq!(WorkspaceId::parse(bad), Err(InvalidWorkspaceId), "{bad}");
        }
    }
}

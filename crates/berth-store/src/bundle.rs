//! What a workspace imported from a bundle (`POST /bundles/import`) stores beyond a create.

/// The bundle a workspace was imported from, written in the create's transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspaceOrigin {
    /// The exported workspace's id (`workspaces.source_bundle_id`), when the bundle names one.
    pub source_bundle_id: Option<String>,
    /// The bundle's agent card, kept until the agent registers its own.
    pub agent_card: Option<serde_json::Value>,
    /// Configuration files (path relative to the configs directory → content), already
    /// validated by the caller; stored in `workspace_files`.
    pub files: Vec<(String, String)>,
}

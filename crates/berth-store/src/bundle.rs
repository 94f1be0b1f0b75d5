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

/// One change to a workspace's configs directory made through the files API, kept so that every
/// later start applies it (`workspace_config_edits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEdit {
    /// Relative to the configs directory, `/`-separated, validated by the caller.
    pub path: String,
    /// The file's bytes; `None` deletes the path (a file, or a directory with everything in
    /// it) and every edit recorded beneath it.
    pub content: Option<Vec<u8>>,
}

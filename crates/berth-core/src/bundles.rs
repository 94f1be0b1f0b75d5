//! Bundles (REFERENCE-2.md §3): `GET /bundles/export/{id}` and `POST /bundles/import`, with the
//! fixes of §9.3.
//!
//! - Import goes through Create: every node of the tree passes Create's checks (name, tier 1–4,
//!   runtime, model, …) before anything is written, then each node is written by Create's own
//!   transaction and provisioned like any created workspace (tokens, secrets, env mutators,
//!   canvas layout, the configured backend). A name that is taken gets Create's auto-suffix, so
//!   importing the same bundle twice makes a second, independent workspace with new ids.
//! - The agent card is kept (stored with the row until the agent registers its own), and the
//!   model is exported (from the workspace's `MODEL`) and imported.
//! - File names are validated: `system-prompt.md`, `prompts` keys and `skills/<id>/<path>` must be
//!   plain relative paths (no `..`, no absolute path, no backslash, no hidden segment such as
//!   `.auth_token`); one bad name refuses the whole import. The files are stored with the row
//!   (`workspace_files`) and written into the workspace's configs directory at every provisioning,
//!   by the backend's contained writer.
//! - Export reads a workspace's stored files; for a workspace that was not imported it reads the
//!   template whose `config.yaml` `name` is the workspace's name, else the runtime's
//!   `<runtime>-default` template, else the `config.yaml` provisioning generates — never an
//!   unrelated first template. Contents are not trimmed. A failure is an error, not a 404, and
//!   a child that fails fails the export.
//! - berth adds one field, `runtime`, so that the runtime round-trips even when `config.yaml`
//!   names none; an import without it reads `runtime` from `prompts["config.yaml"]` (parsed as
//!   YAML).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use berth_domain::template::{DefaultConfig, generated_default_config, parse_manifest};
use berth_store::WorkspaceOrigin;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::create::{CreateContext, CreateError, CreateRequest, CreateResponse};
use crate::service::WorkspaceService;

/// Deepest nesting of `sub_workspaces` (the root is depth 0).
pub const BUNDLE_MAX_DEPTH: usize = 8;
/// Most workspaces one bundle may hold, the root included.
pub const BUNDLE_MAX_WORKSPACES: usize = 64;
/// Most files one workspace of a bundle may carry.
pub const BUNDLE_MAX_FILES: usize = 200;
/// Longest relative file path, in bytes, and deepest nesting.
const MAX_PATH_BYTES: usize = 512;
const MAX_PATH_DEPTH: usize = 16;
/// Longest `id` (stored as the new workspace's `source_bundle_id`).
const MAX_SOURCE_ID_BYTES: usize = 255;
/// Largest template file export reads (the reference's exec cap).
const MAX_EXPORT_FILE_BYTES: u64 = 5 * 1024 * 1024;
/// The prompt file a bundle's `system_prompt` is.
const SYSTEM_PROMPT: &str = "system-prompt.md";
/// The manifest a bundle's `prompts["config.yaml"]` is.
const CONFIG_YAML: &str = "config.yaml";

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A bundle (`.bundle.json`, REFERENCE-2.md §3.1). Missing keys and `null` read as empty, as the
/// reference's binding does; a value of the wrong type is a bind failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bundle {
    /// `"1.0"`.
    #[serde(deserialize_with = "null_as_default")]
    pub schema: String,
    /// The exported workspace's id.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Workspace name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Workspace role.
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// Tier (0 = Create's default).
    #[serde(deserialize_with = "null_as_default")]
    pub tier: i64,
    /// berth: the runtime (empty = from `prompts["config.yaml"]`).
    #[serde(deserialize_with = "null_as_default")]
    pub runtime: String,
    /// Model slug (berth: exported and imported; empty = from `config.yaml`).
    #[serde(deserialize_with = "null_as_default")]
    pub model: String,
    /// `system-prompt.md`.
    #[serde(deserialize_with = "null_as_default")]
    pub system_prompt: String,
    /// `skills/<id>/…`.
    #[serde(deserialize_with = "null_as_default")]
    pub skills: Vec<BundleSkill>,
    /// Always empty on export; ignored on import.
    #[serde(deserialize_with = "null_as_default")]
    pub tools: Vec<BundleTool>,
    /// Other files by relative path (the reference: only `config.yaml`).
    #[serde(deserialize_with = "null_as_default")]
    pub prompts: BTreeMap<String, String>,
    /// Child workspaces.
    #[serde(deserialize_with = "null_as_default")]
    pub sub_workspaces: Vec<Bundle>,
    /// The stored agent card (`null` when none).
    pub agent_card: Value,
    /// Always empty.
    #[serde(deserialize_with = "null_as_default")]
    pub author: String,
    /// `"1.0.0"`.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
}

/// One skill of a bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleSkill {
    /// The directory name under `skills/`.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Display name (the id on export).
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// First text line of `SKILL.md` after its front matter.
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// Relative path → content.
    #[serde(deserialize_with = "null_as_default")]
    pub files: BTreeMap<String, String>,
}

/// One tool of a bundle (carried, never used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleTool {
    /// Tool id.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Tool configuration.
    pub config: Value,
}

/// One imported workspace, as `POST /bundles/import` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportedWorkspace {
    /// The new workspace (absent only when its create failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<WorkspaceId>,
    /// Its name (auto-suffixed like Create's when the bundle's was taken).
    pub name: String,
    /// Its status after the create (`provisioning`, …), or `failed`.
    pub status: String,
    /// Why its create failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The once-only connection payload of an external workspace without URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<Value>,
    /// Its imported children.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ImportedWorkspace>,
}

/// Why an export or import was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No such workspace.
    #[error("bundle not found")]
    NotFound,
    /// A node's name is blank.
    #[error("bundle name is required")]
    NameRequired,
    /// A file name is not a plain relative path inside the configs directory.
    #[error("invalid file path")]
    InvalidPath(String),
    /// Anything else structurally wrong with the bundle (depth, size, config.yaml, card).
    #[error("{0}")]
    Invalid(String),
    /// A node failed Create's checks (the workspace it names is given).
    #[error("bundle workspace {name:?}: {source}")]
    Create {
        /// The node's name.
        name: String,
        /// Create's refusal.
        #[source]
        source: CreateError,
    },
    /// The workspace tree is deeper than [`BUNDLE_MAX_DEPTH`]: its bundle could not be imported.
    #[error("workspace tree nests more than {BUNDLE_MAX_DEPTH} levels deep")]
    TooDeep,
    /// The store failed.
    #[error("{0}")]
    Store(&'static str, #[source] berth_store::Error),
    /// Reading a template failed.
    #[error("failed to read template files")]
    Io(#[source] std::io::Error),
}

/// One node of an import, checked and converted, ready for Create.
struct Prepared {
    request: CreateRequest,
    origin: WorkspaceOrigin,
    children: Vec<Prepared>,
}

/// A plain relative path: no root, no `..` or `.` segment, no hidden segment, no backslash or
/// control character, not empty, bounded.
fn valid_bundle_path(path: &str) -> bool {
    if path.is_empty()
        || path.len() > MAX_PATH_BYTES
        || path.contains('\\')
        || path.chars().any(char::is_control)
    {
        return false;
    }
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() <= MAX_PATH_DEPTH
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('.') && p.len() <= 255)
}

/// The files of one node: `system_prompt`, `prompts` and skills, by relative path.
fn node_files(b: &Bundle) -> Result<BTreeMap<String, String>, BundleError> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |path: String, content: &str| -> Result<(), BundleError> {
        if !valid_bundle_path(&path) {
            return Err(BundleError::InvalidPath(path));
        }
        // berth's one rule for client text (`berth_domain::text`); the HTTP layer refuses
        // such a body first, embedders meet the same rule here.
        berth_domain::text::check_str(&path, content)
            .map_err(|e| BundleError::Invalid(e.to_string()))?;
        if files.insert(path.clone(), content.to_owned()).is_some() {
            return Err(BundleError::Invalid(format!("duplicate file {path:?}")));
        }
        Ok(())
    };
    if !b.system_prompt.is_empty() {
        add(SYSTEM_PROMPT.to_owned(), &b.system_prompt)?;
    }
    for (path, content) in &b.prompts {
        if path == "skills" || path.starts_with("skills/") {
            // Skill files travel in `skills`, where their id is checked.
            return Err(BundleError::InvalidPath(path.clone()));
        }
        add(path.clone(), content)?;
    }
    for skill in &b.skills {
        if skill.id.contains('/') || !valid_bundle_path(&skill.id) {
            return Err(BundleError::InvalidPath(format!("skills/{}", skill.id)));
        }
        for (rel, content) in &skill.files {
            if !valid_bundle_path(rel) {
                return Err(BundleError::InvalidPath(format!(
                    "skills/{}/{rel}",
                    skill.id
                )));
            }
            add(format!("skills/{}/{rel}", skill.id), content)?;
        }
    }
    if files.len() > BUNDLE_MAX_FILES {
        return Err(BundleError::Invalid(format!(
            "too many files ({}), max {BUNDLE_MAX_FILES}",
            files.len()
        )));
    }
    // A path that is also the directory of another path cannot be written.
    if let Some(bad) = files
        .keys()
        .find(|p| files.keys().any(|q| q.starts_with(&format!("{p}/"))))
    {
        return Err(BundleError::InvalidPath(bad.clone()));
    }
    Ok(files)
}

/// Checks one node and its children (shape, names, files, card) and converts them.
fn prepare(b: &Bundle, depth: usize, count: &mut usize) -> Result<Prepared, BundleError> {
    *count += 1;
    if *count > BUNDLE_MAX_WORKSPACES {
        return Err(BundleError::Invalid(format!(
            "a bundle holds at most {BUNDLE_MAX_WORKSPACES} workspaces"
        )));
    }
    if depth > BUNDLE_MAX_DEPTH {
        return Err(BundleError::Invalid(format!(
            "sub_workspaces nest at most {BUNDLE_MAX_DEPTH} levels deep"
        )));
    }
    let name = b.name.trim();
    if name.is_empty() {
        return Err(BundleError::NameRequired);
    }
    let files = node_files(b)?;
    let manifest = match files.get(CONFIG_YAML) {
        Some(text) => parse_manifest(text)
            .map_err(|e| BundleError::Invalid(format!("invalid config.yaml: {e}")))?,
        None => Default::default(),
    };
    let runtime = match b.runtime.trim() {
        "" => manifest.runtime.clone().unwrap_or_default(),
        r => r.to_owned(),
    };
    let model = match b.model.trim() {
        "" => manifest.model.clone().unwrap_or_default(),
        m => m.to_owned(),
    };
    let agent_card = (!b.agent_card.is_null()).then(|| b.agent_card.clone());
    if let Some(card) = &agent_card {
        crate::registry::check_card(card).map_err(|e| BundleError::Invalid(e.to_string()))?;
    }
    if b.id.len() > MAX_SOURCE_ID_BYTES {
        return Err(BundleError::Invalid(format!(
            "bundle id must be at most {MAX_SOURCE_ID_BYTES} bytes"
        )));
    }
    let children = b
        .sub_workspaces
        .iter()
        .map(|c| prepare(c, depth + 1, count))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        request: CreateRequest {
            name: name.to_owned(),
            role: b.description.clone(),
            tier: b.tier,
            model,
            runtime,
            ..CreateRequest::default()
        },
        origin: WorkspaceOrigin {
            source_bundle_id: (!b.id.is_empty()).then(|| b.id.clone()),
            agent_card,
            files: files.into_iter().collect(),
        },
        children,
    })
}

/// The files of one template directory that a bundle carries: `system-prompt.md`,
/// `config.yaml` and every regular file under `skills/<dir>/` (symlinks are not followed).
fn read_template(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    fn read_small(path: &Path) -> std::io::Result<Option<String>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_file() || meta.len() > MAX_EXPORT_FILE_BYTES {
            return Ok(None);
        }
        match String::from_utf8(std::fs::read(path)?) {
            Ok(s) => Ok(Some(s)),
            Err(_) => {
                tracing::warn!(file = %path.display(), "bundle export skips a file that is not UTF-8");
                Ok(None)
            }
        }
    }
    fn walk(
        dir: &Path,
        rel: &str,
        out: &mut BTreeMap<String, String>,
        budget: &mut usize,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let path = format!("{rel}/{name}");
            let kind = e.file_type()?;
            if kind.is_dir() {
                walk(&e.path(), &path, out, budget)?;
            } else if kind.is_file()
                && *budget > 0
                && let Some(content) = read_small(&e.path())?
            {
                *budget -= 1;
                out.insert(path, content);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    for file in [SYSTEM_PROMPT, CONFIG_YAML] {
        if let Some(content) = read_small(&dir.join(file))? {
            out.insert(file.to_owned(), content);
        }
    }
    let skills = dir.join("skills");
    if std::fs::symlink_metadata(&skills).is_ok_and(|m| m.is_dir()) {
        let mut budget = BUNDLE_MAX_FILES;
        let mut dirs: Vec<_> = std::fs::read_dir(&skills)?.flatten().collect();
        dirs.sort_by_key(std::fs::DirEntry::file_name);
        for d in dirs {
            if d.file_type()?.is_dir()
                && let Ok(name) = d.file_name().into_string()
            {
                walk(&d.path(), &format!("skills/{name}"), &mut out, &mut budget)?;
            }
        }
    }
    Ok(out)
}

/// The first non-empty line of `SKILL.md` that is not a heading, after its YAML front matter.
fn skill_description(skill_md: &str) -> String {
    let mut lines = skill_md.lines().peekable();
    if lines.peek().map(|l| l.trim()) == Some("---") {
        lines.next();
        for l in lines.by_ref() {
            if l.trim() == "---" {
                break;
            }
        }
    }
    lines
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default()
        .to_owned()
}

/// Fills a bundle's file fields from files by relative path (the inverse of [`node_files`]).
fn fill_files(bundle: &mut Bundle, files: BTreeMap<String, String>) {
    let mut skills: BTreeMap<String, BundleSkill> = BTreeMap::new();
    for (path, content) in files {
        if path == SYSTEM_PROMPT {
            bundle.system_prompt = content;
        } else if let Some(rest) = path.strip_prefix("skills/") {
            let Some((id, rel)) = rest.split_once('/') else {
                continue;
            };
            let skill = skills.entry(id.to_owned()).or_insert_with(|| BundleSkill {
                id: id.to_owned(),
                name: id.to_owned(),
                ..BundleSkill::default()
            });
            if rel == "SKILL.md" {
                skill.description = skill_description(&content);
            }
            skill.files.insert(rel.to_owned(), content);
        } else {
            bundle.prompts.insert(path, content);
        }
    }
    bundle.skills = skills.into_values().collect();
}

impl WorkspaceService {
    /// `GET /bundles/export/{id}`: the workspace and its live descendants as a bundle.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn export_bundle(&self, id: WorkspaceId) -> Result<Bundle, BundleError> {
        let tree = self
            .store
            .hierarchy()
            .await
            .map_err(|e| BundleError::Store("failed to read the workspace tree", e))?;
        let mut children: HashMap<WorkspaceId, Vec<WorkspaceId>> = HashMap::new();
        for (child, parent) in tree {
            if let Some(parent) = parent {
                children.entry(parent).or_default().push(child);
            }
        }
        let mut seen = HashSet::new();
        self.export_node(id, 0, &children, &mut seen)
            .await?
            .ok_or(BundleError::NotFound)
    }

    /// One node; `None` when the row does not exist or is removed (a removed workspace is not
    /// exported, as the root or as a child).
    async fn export_node(
        &self,
        id: WorkspaceId,
        depth: usize,
        children: &HashMap<WorkspaceId, Vec<WorkspaceId>>,
        seen: &mut HashSet<WorkspaceId>,
    ) -> Result<Option<Bundle>, BundleError> {
        let Some(row) = self
            .store
            .get_workspace(id)
            .await
            .map_err(|e| BundleError::Store("failed to read the workspace", e))?
            .filter(|w| w.status != WorkspaceStatus::Removed)
        else {
            return Ok(None);
        };
        seen.insert(id);
        let model = self
            .store
            .workspace_secrets(id)
            .await
            .map_err(|e| BundleError::Store("failed to read the workspace's model", e))?
            .into_iter()
            .find(|(k, _)| k == crate::MODEL_KEY)
            .map(|(_, v)| v.expose_secret().to_owned())
            .unwrap_or_default();
        let files = self.export_files(&row, &model).await?;
        let mut bundle = Bundle {
            schema: "1.0".into(),
            id: id.to_string(),
            name: row.name.clone(),
            description: row.role.clone().unwrap_or_default(),
            tier: row.tier,
            runtime: row.runtime.clone(),
            model,
            agent_card: row.agent_card.clone().unwrap_or(Value::Null),
            version: "1.0.0".into(),
            ..Bundle::default()
        };
        fill_files(&mut bundle, files);
        for child in children.get(&id).into_iter().flatten() {
            if seen.contains(child) {
                continue;
            }
            // Removed children are not exported; a child that vanished meanwhile is skipped.
            let live = self
                .store
                .get_workspace(*child)
                .await
                .map_err(|e| BundleError::Store("failed to read the workspace", e))?
                .is_some_and(|w| w.status != WorkspaceStatus::Removed);
            if !live {
                continue;
            }
            if depth >= BUNDLE_MAX_DEPTH {
                // Import would refuse the bundle; say so instead of cutting the tree short.
                return Err(BundleError::TooDeep);
            }
            if let Some(sub) = Box::pin(self.export_node(*child, depth + 1, children, seen)).await?
            {
                bundle.sub_workspaces.push(sub);
            }
        }
        Ok(Some(bundle))
    }

    /// The configuration files of one workspace: those it was imported with, else its
    /// template's (by name, then `<runtime>-default`), else the generated `config.yaml`.
    async fn export_files(
        &self,
        row: &berth_store::Workspace,
        model: &str,
    ) -> Result<BTreeMap<String, String>, BundleError> {
        let stored = self
            .store
            .workspace_files(row.id)
            .await
            .map_err(|e| BundleError::Store("failed to read the workspace's files", e))?;
        if !stored.is_empty() {
            return Ok(stored.into_iter().collect());
        }
        let catalog = self.templates.as_ref().clone();
        let name = row.name.clone();
        let runtime = row.runtime.clone();
        let found = tokio::task::spawn_blocking(move || {
            let by_name = catalog
                .list()
                .templates
                .into_iter()
                .find(|t| t.name == name)
                .map(|t| catalog.root().join(t.id));
            match by_name.or_else(|| catalog.runtime_default(&runtime)) {
                Some(dir) => read_template(&dir).map(Some),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| BundleError::Io(std::io::Error::other(e)))?
        .map_err(BundleError::Io)?;
        if let Some(files) = found {
            return Ok(files);
        }
        let providers = (row.runtime == "claude-code")
            .then(|| self.templates.claude_code_providers())
            .flatten();
        let cfg = DefaultConfig {
            name: &row.name,
            role: row.role.as_deref().unwrap_or_default(),
            tier: u8::try_from(row.tier).unwrap_or(3),
            runtime: &row.runtime,
            model,
            claude_code_providers: providers.as_ref(),
        };
        Ok([(CONFIG_YAML.to_owned(), generated_default_config(&cfg))].into())
    }

    /// `POST /bundles/import`: checks the whole tree (shape, file names, and Create's rules for
    /// every node) before anything is written, then creates the root and its descendants
    /// through Create, each provisioned like a created workspace.
    #[tracing::instrument(skip_all, fields(bundle.name = %bundle.name))]
    pub async fn import_bundle(
        &self,
        bundle: Bundle,
        platform_url: String,
    ) -> Result<ImportedWorkspace, BundleError> {
        let mut count = 0;
        let tree = prepare(&bundle, 0, &mut count)?;
        self.check_tree(&tree).await?;
        let ctx = CreateContext {
            platform_url,
            ..CreateContext::default()
        };
        let root = self
            .create_with_origin(tree.request.clone(), ctx.clone(), Some(tree.origin.clone()))
            .await
            .map_err(|source| BundleError::Create {
                name: tree.request.name.clone(),
                source,
            })?;
        let id = root.response.id;
        let mut result = self.imported(&tree.request.name, &root.response).await;
        for child in tree.children {
            result
                .children
                .push(Box::pin(self.import_child(child, id, &ctx)).await);
        }
        tracing::info!(workspace.id = %id, workspaces = count, "bundle imported");
        Ok(result)
    }

    /// Runs Create's checks on every node, writing nothing.
    async fn check_tree(&self, node: &Prepared) -> Result<(), BundleError> {
        self.validate(node.request.clone())
            .await
            .map_err(|source| BundleError::Create {
                name: node.request.name.clone(),
                source,
            })?;
        for child in &node.children {
            Box::pin(self.check_tree(child)).await?;
        }
        Ok(())
    }

    /// Creates one child (checked already) under `parent`, then its children. A child whose
    /// create fails is reported `failed` and its subtree is not imported; its siblings are.
    async fn import_child(
        &self,
        node: Prepared,
        parent: WorkspaceId,
        ctx: &CreateContext,
    ) -> ImportedWorkspace {
        let mut request = node.request;
        request.parent_id = Some(parent.to_string());
        match self
            .create_with_origin(request.clone(), ctx.clone(), Some(node.origin))
            .await
        {
            Ok(created) => {
                let id = created.response.id;
                let mut result = self.imported(&request.name, &created.response).await;
                for child in node.children {
                    result
                        .children
                        .push(Box::pin(self.import_child(child, id, ctx)).await);
                }
                result
            }
            Err(e) => {
                tracing::warn!(parent.id = %parent, error = %e, "bundle child not imported");
                ImportedWorkspace {
                    workspace_id: None,
                    name: request.name,
                    status: "failed".into(),
                    error: Some(e.to_string()),
                    connection: None,
                    children: Vec::new(),
                }
            }
        }
    }

    /// The report of one created node, with its final (possibly auto-suffixed) name.
    async fn imported(&self, requested: &str, created: &CreateResponse) -> ImportedWorkspace {
        let name = match self.store.get_workspace(created.id).await {
            Ok(Some(w)) => w.name,
            _ => requested.to_owned(),
        };
        ImportedWorkspace {
            workspace_id: Some(created.id),
            name,
            status: created.status.as_str().to_owned(),
            error: None,
            connection: created.connection.clone(),
            children: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_are_plain_and_contained() {
        for ok in ["config.yaml", "system-prompt.md", "a/b/c.txt", "SKILL.md"] {
            assert!(valid_bundle_path(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../etc/passwd",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\\b",
            "x\0y",
            "a/",
            ".auth_token",
            "skills/.hidden/x",
        ] {
            assert!(!valid_bundle_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_round_trip_between_bundle_and_paths() {
        let files: BTreeMap<String, String> = [
            ("system-prompt.md", "  be kind  \n"),
            ("config.yaml", "runtime: echo\n"),
            ("notes.md", "n"),
            (
                "skills/web/SKILL.md",
                "---\nname: web\n---\n# Web\n\nBrowses the web.\n",
            ),
            ("skills/web/lib/a.py", "print(1)"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut bundle = Bundle {
            name: "x".into(),
            ..Bundle::default()
        };
        fill_files(&mut bundle, files.clone());
        assert_eq!(bundle.system_prompt, "  be kind  \n");
        assert_eq!(bundle.skills.len(), 1);
        assert_eq!(bundle.skills[0].description, "Browses the web.");
        assert_eq!(node_files(&bundle).unwrap(), files);
    }

    #[test]
    fn a_file_holding_a_nul_is_refused() {
        let bundle = Bundle {
            name: "x".into(),
            system_prompt: "a\0b".into(),
            ..Bundle::default()
        };
        assert_eq!(
            node_files(&bundle).unwrap_err().to_string(),
            "system-prompt.md must not contain NUL characters"
        );
    }

    #[test]
    fn a_skill_id_or_file_that_escapes_is_refused() {
        for (id, rel) in [("..", "x"), ("a/b", "x"), ("ok", "../../x"), ("ok", "/abs")] {
            let bundle = Bundle {
                name: "x".into(),
                skills: vec![BundleSkill {
                    id: id.into(),
                    files: [(rel.to_owned(), "c".to_owned())].into(),
                    ..BundleSkill::default()
                }],
                ..Bundle::default()
            };
            assert!(
                matches!(node_files(&bundle), Err(BundleError::InvalidPath(_))),
                "{id}/{rel}"
            );
        }
    }

    #[test]
    fn nesting_and_names_are_checked_before_anything_else() {
        let mut deep = Bundle {
            name: "leaf".into(),
            ..Bundle::default()
        };
        for _ in 0..=BUNDLE_MAX_DEPTH {
            deep = Bundle {
                name: "n".into(),
                sub_workspaces: vec![deep],
                ..Bundle::default()
            };
        }
        assert!(matches!(
            prepare(&deep, 0, &mut 0),
            Err(BundleError::Invalid(_))
        ));
        let blank_child = Bundle {
            name: "root".into(),
            sub_workspaces: vec![Bundle {
                name: "  ".into(),
                ..Bundle::default()
            }],
            ..Bundle::default()
        };
        assert!(matches!(
            prepare(&blank_child, 0, &mut 0),
            Err(BundleError::NameRequired)
        ));
    }

    #[test]
    fn skill_descriptions_skip_front_matter_and_headings() {
        assert_eq!(skill_description("---\na: b\n---\n# T\n\nText\n"), "Text");
        assert_eq!(skill_description("Plain"), "Plain");
        assert_eq!(skill_description("# Only"), "");
    }
}

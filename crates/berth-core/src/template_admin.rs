//! `GET /templates` and `POST /templates/import` (REFERENCE-2.md §6), with the fixes of §9.6:
//! `skills` is `[]` when absent, `runtime` is reported without its `-default` suffix, malformed
//! templates are reported (not silently dropped), and an import is validated in full before
//! anything is written, then written into a hidden temporary directory inside the templates root
//! and renamed into place: a failed import leaves nothing behind. A generated `config.yaml`
//! declares its `runtime`, so Create can use the imported template.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use berth_domain::template::parse_manifest;
use yaml_serde::Value as Yaml;

use crate::service::WorkspaceService;
use crate::templates::{TemplateCatalog, TemplateProblem, read_manifest};

/// Most files one import may carry (REFERENCE-2.md §6.2).
pub const TEMPLATE_IMPORT_MAX_FILES: usize = 200;
/// Longest template id (the directory name), in characters.
const MAX_ID_CHARS: usize = 64;
/// Longest relative file path, in bytes, and deepest nesting.
const MAX_PATH_BYTES: usize = 512;
const MAX_PATH_DEPTH: usize = 16;
/// The model written into a generated `config.yaml` when the import names none (the
/// reference's default).
const DEFAULT_IMPORT_MODEL: &str = "anthropic:claude-haiku-4-5-20251001";
/// The runtime written into a generated `config.yaml` when the import names none.
const DEFAULT_IMPORT_RUNTIME: &str = "claude-code";

/// One valid template, as `GET /templates` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateInfo {
    /// The directory name.
    pub id: String,
    /// `name` (empty when absent).
    pub name: String,
    /// `description` (empty when absent).
    pub description: String,
    /// `tier`, when set.
    pub tier: Option<i64>,
    /// Top-level `runtime`, trimmed, without a trailing `-default` (empty when absent).
    pub runtime: String,
    /// `runtime_config.model`, else top-level `model` (empty when absent).
    pub model: String,
    /// `runtime_config.models[]`, as JSON.
    pub models: Vec<serde_json::Value>,
    /// `runtime_config.required_env`.
    pub required_env: Vec<String>,
    /// `runtime_config.providers` (slugs).
    pub providers: Vec<String>,
    /// Top-level `providers[]`, as JSON.
    pub provider_registry: Vec<serde_json::Value>,
    /// `skills` (empty when absent).
    pub skills: Vec<String>,
    /// `runtime_config.provision_timeout_seconds`, when positive.
    pub provision_timeout_seconds: Option<i64>,
}

/// A template directory that could not be read as a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateIssue {
    /// The directory name.
    pub id: String,
    /// Why.
    pub error: String,
}

/// The templates directory, listed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateListing {
    /// Valid templates, by directory name.
    pub templates: Vec<TemplateInfo>,
    /// Malformed templates, by directory name.
    pub errors: Vec<TemplateIssue>,
}

/// A `POST /templates/import` request, bound.
#[derive(Debug, Clone, Default)]
pub struct TemplateImport {
    /// The display name; the directory id is derived from it.
    pub name: String,
    /// Relative path → content.
    pub files: BTreeMap<String, String>,
    /// Runtime of the generated `config.yaml` (default `claude-code`); ignored when the files
    /// carry a `config.yaml`.
    pub runtime: Option<String>,
    /// Model of the generated `config.yaml` (default the reference's); ignored likewise.
    pub model: Option<String>,
}

/// A successful import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The new directory name (usable as `template` in Create).
    pub id: String,
    /// The name as given.
    pub name: String,
}

/// Why an import was refused. Every variant but `Io` is the caller's fault and writes nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// More than [`TEMPLATE_IMPORT_MAX_FILES`] files.
    #[error("too many files ({0}), max {TEMPLATE_IMPORT_MAX_FILES}")]
    TooManyFiles(usize),
    /// No files at all.
    #[error("files must not be empty")]
    NoFiles,
    /// The name is empty or yields no usable directory id.
    #[error("{0}")]
    InvalidName(&'static str),
    /// A file path is empty, absolute, escapes the template, or is otherwise unusable.
    #[error("invalid file path")]
    InvalidPath(String),
    /// The supplied `config.yaml` is not a valid manifest.
    #[error("invalid config.yaml: {0}")]
    InvalidConfig(String),
    /// The requested runtime is neither built in nor declared by a template.
    #[error("unknown runtime {0:?}")]
    UnknownRuntime(String),
    /// A template with this id exists.
    #[error("template already exists")]
    Exists(String),
    /// Writing failed (nothing was left behind).
    #[error("template import failed: {0}")]
    Io(#[source] std::io::Error),
}

/// The directory id of a template name: space and `-` become `-`, letters and digits (any
/// script) are kept lower-cased, `_` is kept, everything else is dropped. Unlike the
/// reference, non-ASCII letters survive, so distinct names do not collapse into `unnamed`.
pub fn template_id(name: &str) -> Option<String> {
    let mut id = String::new();
    for c in name.chars() {
        match c {
            ' ' | '-' => id.push('-'),
            '_' => id.push('_'),
            c if c.is_alphanumeric() => id.extend(c.to_lowercase()),
            _ => {}
        }
    }
    let usable = id.chars().any(|c| c.is_alphanumeric());
    usable.then_some(id)
}

/// Checks one relative file path of an import.
fn valid_relative_path(path: &str) -> bool {
    if path.is_empty()
        || path.len() > MAX_PATH_BYTES
        || path.starts_with('/')
        || path.contains("..")
        || path.contains('\\')
        || path.chars().any(char::is_control)
    {
        return false;
    }
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() <= MAX_PATH_DEPTH
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && p.len() <= 255)
}

impl TemplateCatalog {
    /// Lists the templates directory: immediate, non-hidden subdirectories with a
    /// `config.yaml` (symlinks are not followed), in lexical order.
    pub fn list(&self) -> TemplateListing {
        let mut listing = TemplateListing::default();
        let Ok(entries) = std::fs::read_dir(self.root()) else {
            return listing;
        };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        dirs.sort();
        for (id, dir) in dirs {
            match describe(&id, &dir) {
                Ok(Some(info)) => listing.templates.push(info),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(template.id = %id, %error, "malformed template");
                    listing.errors.push(TemplateIssue { id, error });
                }
            }
        }
        listing
    }
}

/// Reads one template; `Ok(None)` when the directory has no `config.yaml`.
fn describe(id: &str, dir: &Path) -> Result<Option<TemplateInfo>, String> {
    let manifest = match read_manifest(dir) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(TemplateProblem::Unreadable(e)) => return Err(format!("config.yaml unreadable: {e}")),
        Err(e) => return Err(e.to_string()),
    };
    // `read_manifest` succeeded, so the file is readable YAML of at most 1 MiB.
    let text = std::fs::read_to_string(dir.join("config.yaml")).map_err(|e| e.to_string())?;
    let doc: Yaml = yaml_serde::from_str(&text).map_err(|e| e.to_string())?;
    let rc = doc.get("runtime_config");
    let strings = |v: Option<&Yaml>, key: &str| -> Result<Vec<String>, String> {
        match v {
            None | Some(Yaml::Null) => Ok(Vec::new()),
            Some(Yaml::Sequence(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("template key {key} must be a list of strings")),
            Some(_) => Err(format!("template key {key} must be a list of strings")),
        }
    };
    let objects = |v: Option<&Yaml>, key: &str| -> Result<Vec<serde_json::Value>, String> {
        match v {
            None | Some(Yaml::Null) => Ok(Vec::new()),
            Some(Yaml::Sequence(items)) if items.iter().all(Yaml::is_mapping) => items
                .iter()
                .map(|i| serde_json::to_value(i).map_err(|e| e.to_string()))
                .collect(),
            Some(_) => Err(format!("template key {key} must be a list of mappings")),
        }
    };
    let runtime = manifest.runtime.clone().unwrap_or_default();
    let runtime = runtime
        .strip_suffix("-default")
        .unwrap_or(&runtime)
        .to_owned();
    Ok(Some(TemplateInfo {
        id: id.to_owned(),
        name: manifest.name.unwrap_or_default(),
        description: manifest.description.unwrap_or_default(),
        tier: manifest.tier,
        runtime,
        model: manifest.model.unwrap_or_default(),
        models: objects(rc.and_then(|r| r.get("models")), "runtime_config.models")?,
        required_env: manifest.required_env,
        providers: strings(
            rc.and_then(|r| r.get("providers")),
            "runtime_config.providers",
        )?,
        provider_registry: objects(doc.get("providers"), "providers")?,
        skills: strings(doc.get("skills"), "skills")?,
        provision_timeout_seconds: manifest.provision_timeout_seconds,
    }))
}

/// The `config.yaml` generated for an import that carries none (REFERENCE-2.md §6.2 step 6,
/// plus `runtime`). Strings are JSON-quoted, which YAML reads as double-quoted scalars.
fn generated_config(name: &str, tier: u8, runtime: &str, model: &str, files: &[&str]) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let prompts: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !f.contains('/') && f.ends_with(".md"))
        .collect();
    let skills: Vec<&str> = files
        .iter()
        .filter_map(|f| f.strip_prefix("skills/")?.strip_suffix("/SKILL.md"))
        .filter(|s| !s.contains('/'))
        .collect();
    let mut out = format!(
        "name: {}\ndescription: Imported agent\nversion: 1.0.0\ntier: {tier}\nruntime: {}\nmodel: {}\n",
        q(name),
        q(runtime),
        q(model)
    );
    out.push_str("prompt_files:\n");
    if prompts.is_empty() {
        out.push_str("  - system-prompt.md\n");
    }
    for p in prompts {
        out.push_str(&format!("  - {}\n", q(p)));
    }
    if skills.is_empty() {
        out.push_str("skills: []\n");
    } else {
        out.push_str("skills:\n");
        for s in skills {
            out.push_str(&format!("  - {}\n", q(s)));
        }
    }
    out.push_str("tools: []\na2a:\n  port: 8000\n  streaming: true\n  push_notifications: true\n");
    if runtime == DEFAULT_IMPORT_RUNTIME {
        out.push_str("env:\n  required:\n    - ANTHROPIC_API_KEY\n  optional: []\n");
    } else {
        out.push_str("env:\n  required: []\n  optional: []\n");
    }
    out
}

/// Writes `files` into a fresh hidden directory under `root`, then renames it to `id`.
fn write_atomically(
    root: &Path,
    id: &str,
    files: &BTreeMap<String, String>,
) -> Result<(), ImportError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(ImportError::Io)?;
    let target = root.join(id);
    if target.symlink_metadata().is_ok() {
        return Err(ImportError::Exists(id.to_owned()));
    }
    let tmp = root.join(format!(".import-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| -> std::io::Result<()> {
        std::fs::DirBuilder::new().mode(0o755).create(&tmp)?;
        for (rel, content) in files {
            let path = tmp.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        if let Err(cleanup) = std::fs::remove_dir_all(&tmp)
            && cleanup.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(dir = %tmp.display(), error = %cleanup, "could not remove a failed import");
        }
        return Err(ImportError::Io(e));
    }
    Ok(())
}

impl WorkspaceService {
    /// `GET /templates`.
    pub async fn list_templates(&self) -> TemplateListing {
        let catalog = self.templates.as_ref().clone();
        let mut listing = tokio::task::spawn_blocking(move || catalog.list())
            .await
            .unwrap_or_default();
        // A forced tier (the reference's SaaS rule) is the tier every template gets.
        if let Some(tier) = self.config.forced_tier {
            for t in &mut listing.templates {
                t.tier = Some(i64::from(tier.get()));
            }
        }
        listing
    }

    /// Re-scans the templates directory so new templates' runtimes and timeouts are known.
    pub fn reload_templates(&self) {
        self.templates.reload();
    }

    /// `POST /templates/import`: validates everything, writes atomically, reloads the catalog.
    pub async fn import_template(&self, req: TemplateImport) -> Result<Imported, ImportError> {
        let name = req.name.trim().to_owned();
        if name.is_empty() {
            return Err(ImportError::InvalidName("name is required"));
        }
        if req.files.len() > TEMPLATE_IMPORT_MAX_FILES {
            return Err(ImportError::TooManyFiles(req.files.len()));
        }
        if req.files.is_empty() {
            return Err(ImportError::NoFiles);
        }
        let id = template_id(&name).ok_or(ImportError::InvalidName(
            "template name must contain a letter or a digit",
        ))?;
        if id.chars().count() > MAX_ID_CHARS {
            return Err(ImportError::InvalidName("template name is too long"));
        }
        let owned_paths: Vec<String> = req.files.keys().cloned().collect();
        let paths: Vec<&str> = owned_paths.iter().map(String::as_str).collect();
        if let Some(bad) = paths.iter().find(|p| !valid_relative_path(p)) {
            return Err(ImportError::InvalidPath((*bad).to_owned()));
        }
        // A path that is also the directory of another path cannot be written.
        if let Some(bad) = paths
            .iter()
            .find(|p| paths.iter().any(|q| q.starts_with(&format!("{p}/"))))
        {
            return Err(ImportError::InvalidPath((*bad).to_owned()));
        }
        let mut files = req.files;
        match files.get("config.yaml") {
            Some(text) => {
                parse_manifest(text).map_err(|e| ImportError::InvalidConfig(e.to_string()))?;
            }
            None => {
                let runtime = req
                    .runtime
                    .as_deref()
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .unwrap_or(DEFAULT_IMPORT_RUNTIME);
                if !self.templates.is_known_runtime(runtime) {
                    return Err(ImportError::UnknownRuntime(runtime.to_owned()));
                }
                let model = req
                    .model
                    .as_deref()
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .unwrap_or(DEFAULT_IMPORT_MODEL);
                let tier = self.config.forced_tier.map_or(3, |t| t.get());
                let config = generated_config(&name, tier, runtime, model, &paths);
                files.insert("config.yaml".to_owned(), config);
            }
        }
        let catalog = self.templates.as_ref().clone();
        let dir_id = id.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = catalog
                .import_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            write_atomically(catalog.root(), &dir_id, &files)
        })
        .await
        .map_err(|e| ImportError::Io(std::io::Error::other(e)))??;
        self.reload_templates();
        tracing::info!(template.id = %id, "template imported");
        Ok(Imported { id, name: req.name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_letters_of_any_script() {
        assert_eq!(
            template_id("My Agent-2_x!").as_deref(),
            Some("my-agent-2_x")
        );
        assert_eq!(
            template_id("Ünïcode Ágent").as_deref(),
            Some("ünïcode-ágent")
        );
        assert_eq!(template_id("日本語").as_deref(), Some("日本語"));
        assert_eq!(template_id("../..").as_deref(), None);
        assert_eq!(template_id("- -"), None);
    }

    #[test]
    fn relative_paths_are_contained() {
        for ok in ["config.yaml", "skills/a/SKILL.md", ".env", "a/b/c.txt"] {
            assert!(valid_relative_path(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "x\0y",
            "a/",
        ] {
            assert!(!valid_relative_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_write_that_fails_midway_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        // `a` as a file, then `a/b` needs `a` as a directory: the second write fails.
        let files: BTreeMap<String, String> = [("a", "x"), ("a/b", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err = write_atomically(root.path(), "t", &files).unwrap_err();
        assert!(matches!(err, ImportError::Io(_)), "{err:?}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

        let ok: BTreeMap<String, String> = [("a/b".to_owned(), "y".to_owned())].into();
        write_atomically(root.path(), "t", &ok).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("t/a/b")).unwrap(),
            "y"
        );
        assert!(matches!(
            write_atomically(root.path(), "t", &ok),
            Err(ImportError::Exists(id)) if id == "t"
        ));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_generated_config_declares_a_runtime_and_parses() {
        let text = generated_config(
            "Name \"q\"\n",
            3,
            "claude-code",
            DEFAULT_IMPORT_MODEL,
            &["a.md", "skills/web/SKILL.md", "docs/b.md"],
        );
        let m = parse_manifest(&text).unwrap();
        assert_eq!(m.runtime.as_deref(), Some("claude-code"));
        assert_eq!(m.model.as_deref(), Some(DEFAULT_IMPORT_MODEL));
        assert_eq!(m.name.as_deref(), Some("Name \"q\"\n"));
        assert!(
            text.contains("prompt_files:\n  - \"a.md\"\nskills:\n  - \"web\"\n"),
            "{text}"
        );
    }
}

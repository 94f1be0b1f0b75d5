//! The templates directory: path containment, manifest reads, and what the server derives from
//! all templates at start (runtimes they declare, per-runtime provision timeouts).

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use berth_domain::template::{TemplateError, TemplateManifest, parse_manifest};
use berth_domain::validation::{PathError, resolve_inside_root};

/// Largest `config.yaml` berth reads; a template manifest is a few KiB.
const MANIFEST_CAP: u64 = 1024 * 1024;

/// Why a named template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateProblem {
    /// The name escapes the templates root (or is absolute, empty, …).
    #[error(transparent)]
    Path(#[from] PathError),
    /// The template's `config.yaml` is not a valid manifest.
    #[error(transparent)]
    Manifest(#[from] TemplateError),
    /// The template's `config.yaml` exists but cannot be read (or is too large).
    #[error("template config unreadable: {0}")]
    Unreadable(String),
}

/// A named template, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTemplate {
    /// Absolute template directory (may not exist: the reference then falls back).
    pub path: PathBuf,
    /// Whether the directory exists.
    pub exists: bool,
    /// Its manifest (default when there is no `config.yaml`).
    pub manifest: TemplateManifest,
}

/// The templates directory the server was started with.
///
/// What is derived from all templates (runtimes, timeouts) is scanned at load and again by
/// [`TemplateCatalog::reload`] (after an import); clones share it.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    root: PathBuf,
    derived: Arc<RwLock<Arc<Derived>>>,
    /// Serialises imports (check-then-rename of the target directory).
    pub(crate) import_lock: Arc<std::sync::Mutex<()>>,
}

/// What the server derives from all templates.
#[derive(Debug, Default)]
struct Derived {
    runtimes: BTreeSet<String>,
    timeouts: HashMap<String, i64>,
}

impl TemplateCatalog {
    /// Scans `root` (made absolute) once: every immediate subdirectory with a valid `config.yaml`
    /// contributes its runtime and provision timeout. Invalid manifests are skipped with a warning.
    pub fn load(root: &Path) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let derived = Derived::scan(&root);
        Self {
            root,
            derived: Arc::new(RwLock::new(Arc::new(derived))),
            import_lock: Arc::default(),
        }
    }

    /// Re-scans the directory (after an import) and swaps in what it derives; every clone of
    /// this catalog sees the result.
    pub fn reload(&self) {
        let derived = Arc::new(Derived::scan(&self.root));
        *self.derived.write().unwrap_or_else(|p| p.into_inner()) = derived;
    }

    fn derived(&self) -> Arc<Derived> {
        self.derived
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// An empty catalog rooted at `root` (no templates).
    pub fn empty(root: PathBuf) -> Self {
        Self {
            root,
            derived: Arc::default(),
            import_lock: Arc::default(),
        }
    }

    /// The absolute templates root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runtimes declared by the templates.
    pub fn runtimes(&self) -> BTreeSet<String> {
        self.derived().runtimes.clone()
    }

    /// Whether `runtime` is known: built in, or declared by a template.
    pub fn is_known_runtime(&self, runtime: &str) -> bool {
        berth_domain::runtime::KNOWN_RUNTIMES.contains(&runtime)
            || self.derived().runtimes.contains(runtime)
    }

    /// The manifest-declared provision timeout of a runtime, in seconds.
    pub fn provision_timeout_secs(&self, runtime: &str) -> Option<i64> {
        self.derived().timeouts.get(runtime).copied()
    }

    /// Resolves a template name inside the root and reads its manifest.
    pub fn resolve(&self, name: &str) -> Result<ResolvedTemplate, TemplateProblem> {
        let path = resolve_inside_root(&self.root, name)?;
        let exists = path.is_dir();
        let manifest = if exists {
            read_manifest(&path)?.unwrap_or_default()
        } else {
            TemplateManifest::default()
        };
        Ok(ResolvedTemplate {
            path,
            exists,
            manifest,
        })
    }

    /// `<root>/<runtime>-default` when it exists (the reference's fallback template).
    pub fn runtime_default(&self, runtime: &str) -> Option<PathBuf> {
        let p = self.root.join(format!("{runtime}-default"));
        p.is_dir().then_some(p)
    }

    /// The top-level `providers` block of `claude-code-default/config.yaml`, if any.
    pub fn claude_code_providers(&self) -> Option<yaml_serde::Value> {
        let text =
            std::fs::read_to_string(self.root.join("claude-code-default/config.yaml")).ok()?;
        let doc: yaml_serde::Value = yaml_serde::from_str(&text).ok()?;
        doc.get("providers").cloned()
    }
}

impl Derived {
    /// Every immediate subdirectory with a valid `config.yaml` contributes its runtime and
    /// provision timeout; invalid manifests are skipped with a warning.
    fn scan(root: &Path) -> Self {
        let mut manifests = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                let dir = entry.path();
                // Hidden directories are in-flight imports (`template_admin.rs`).
                if !dir.is_dir() || entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                match read_manifest(&dir) {
                    Ok(Some(m)) => manifests.push(m),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(template.dir = %dir.display(), error = %e, "skipping template")
                    }
                }
            }
        }
        Self {
            runtimes: manifests.iter().filter_map(|m| m.runtime.clone()).collect(),
            timeouts: berth_domain::template::provision_timeouts(manifests.iter()),
        }
    }
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<TemplateManifest>, TemplateProblem> {
    let file = dir.join("config.yaml");
    let f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TemplateProblem::Unreadable(e.to_string())),
    };
    let mut text = String::new();
    f.take(MANIFEST_CAP + 1)
        .read_to_string(&mut text)
        .map_err(|e| TemplateProblem::Unreadable(e.to_string()))?;
    if text.len() as u64 > MANIFEST_CAP {
        return Err(TemplateProblem::Unreadable(
            "config.yaml is larger than 1 MiB".into(),
        ));
    }
    Ok(Some(parse_manifest(&text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_runtimes_and_timeouts_and_contains_paths() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        std::fs::create_dir_all(t.join("echo")).unwrap();
        std::fs::write(
            t.join("echo/config.yaml"),
            "name: Echo\nruntime: echo\nruntime_config:\n  model: echo/v1\n  provision_timeout_seconds: 45\n",
        )
        .unwrap();
        std::fs::create_dir_all(t.join("broken")).unwrap();
        std::fs::write(t.join("broken/config.yaml"), "runtime: [not, a, string]\n").unwrap();
        let cat = TemplateCatalog::load(t);
        assert!(cat.is_known_runtime("echo"));
        assert!(cat.is_known_runtime("claude-code"));
        assert!(!cat.is_known_runtime("nope"));
        assert_eq!(cat.provision_timeout_secs("echo"), Some(45));
        let r = cat.resolve("echo").unwrap();
        assert!(r.exists);
        assert_eq!(r.manifest.runtime.as_deref(), Some("echo"));
        assert_eq!(r.manifest.model.as_deref(), Some("echo/v1"));
        assert!(!cat.resolve("missing").unwrap().exists);
        assert!(matches!(
            cat.resolve("../etc"),
            Err(TemplateProblem::Path(_))
        ));
        assert!(matches!(cat.resolve("/etc"), Err(TemplateProblem::Path(_))));
        assert!(matches!(
            cat.resolve("broken"),
            Err(TemplateProblem::Manifest(_))
        ));
    }
}

//! Input rules for workspace fields (REFERENCE.md §3.1–§3.3, §3.7, §1.6–§1.9).
//!
//! Everything here is lexical: no file system access, no symlink resolution. The HTTP layer maps
//! these errors onto the reference's wire messages (Create answers generic texts, PATCH and org
//! import surface the specific ones), so the `Display` texts below are part of the contract.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest accepted workspace name, in bytes (§3.1).
pub const NAME_MAX_BYTES: usize = 255;
/// Longest accepted role, in bytes (§3.1).
pub const ROLE_MAX_BYTES: usize = 1000;
/// Longest accepted model, in bytes (§3.1).
pub const MODEL_MAX_BYTES: usize = 100;
/// Longest accepted runtime label, in bytes (§3.1).
pub const RUNTIME_MAX_BYTES: usize = 100;

/// Characters that may not appear in a name or role: they would break the YAML the server
/// generates from them (§3.1 rule 2).
const FORBIDDEN_CHARS: &[char] = &['{', '}', '[', ']', '|', '>', '*', '&', '!'];

/// Host directories a workspace may never bind-mount (§3.2).
const DENIED_DIR_PREFIXES: &[&str] = &[
    "/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr",
];

/// Which free-text workspace field a [`FieldError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The workspace name.
    Name,
    /// The workspace role (description).
    Role,
    /// The model slug.
    Model,
    /// The runtime label.
    Runtime,
}

impl Field {
    /// The field's wire name, as used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Role => "role",
            Self::Model => "model",
            Self::Runtime => "runtime",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`validate_workspace_fields`] rejected its input. The messages are the reference's, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// The field contains `\n` or `\r`.
    #[error("{0} must not contain newline characters")]
    Newline(Field),
    /// The name or role contains one of `{ } [ ] | > * & !`.
    #[error("{0} contains invalid characters")]
    InvalidCharacters(Field),
    /// The field is longer than `max` bytes.
    #[error("{field} must be at most {max} characters")]
    TooLong {
        /// The offending field.
        field: Field,
        /// Its limit in bytes.
        max: usize,
    },
}

/// Checks name, role, model and runtime in the exact order of REFERENCE.md §3.1; the first failure
/// wins. Lengths are byte lengths and empty values pass.
pub fn validate_workspace_fields(
    name: &str,
    role: &str,
    model: &str,
    runtime: &str,
) -> Result<(), FieldError> {
    let all = [
        (Field::Name, name),
        (Field::Role, role),
        (Field::Model, model),
        (Field::Runtime, runtime),
    ];
    for (field, value) in all {
        if value.contains(['\n', '\r']) {
            return Err(FieldError::Newline(field));
        }
    }
    for (field, value) in [(Field::Name, name), (Field::Role, role)] {
        if value.contains(FORBIDDEN_CHARS) {
            return Err(FieldError::InvalidCharacters(field));
        }
    }
    let limits = [
        (Field::Name, name, NAME_MAX_BYTES),
        (Field::Role, role, ROLE_MAX_BYTES),
        (Field::Model, model, MODEL_MAX_BYTES),
        (Field::Runtime, runtime, RUNTIME_MAX_BYTES),
    ];
    for (field, value, max) in limits {
        if value.len() > max {
            return Err(FieldError::TooLong { field, max });
        }
    }
    Ok(())
}

/// Why [`validate_workspace_dir`] rejected a host directory.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DirError {
    /// The path is relative.
    #[error("workspace_dir must be an absolute path")]
    NotAbsolute,
    /// The path contains `..` somewhere (even inside a file name such as `/a..b`).
    #[error("workspace_dir must not contain '..'")]
    DotDot,
    /// The cleaned path is a denied system directory or lies under one.
    #[error("workspace_dir must not be inside system directory {0}")]
    SystemDirectory(&'static str),
}

/// Validates a host directory to bind-mount into a workspace (§3.2). Only called for a non-empty
/// value; the checks are lexical.
pub fn validate_workspace_dir(dir: &str) -> Result<(), DirError> {
    if !dir.starts_with('/') {
        return Err(DirError::NotAbsolute);
    }
    if dir.contains("..") {
        return Err(DirError::DotDot);
    }
    let cleaned = clean_path(dir);
    for prefix in DENIED_DIR_PREFIXES {
        let under = cleaned
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under {
            return Err(DirError::SystemDirectory(prefix));
        }
    }
    Ok(())
}

/// Lexically cleans a `/`-separated path like Go's `filepath.Clean` on Unix: collapses repeated
/// separators, drops `.` elements, resolves `..` against the preceding element (and drops it at
/// the root), and removes a trailing slash. An empty result becomes `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(last) if *last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps leading `..` elements.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// How a workspace sees its `workspace_dir` (§1.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceAccess {
    /// An isolated named volume; `workspace_dir` is ignored.
    #[default]
    None,
    /// `workspace_dir` bind-mounted read-only.
    ReadOnly,
    /// `workspace_dir` bind-mounted read-write.
    ReadWrite,
}

impl WorkspaceAccess {
    /// The wire value: `none`, `read_only` or `read_write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ReadOnly => "read_only",
            Self::ReadWrite => "read_write",
        }
    }
}

impl fmt::Display for WorkspaceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`validate_workspace_access`] rejected a value. The messages are the reference's, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessError {
    /// Not one of `none`, `read_only`, `read_write`.
    #[error("workspace_access=\"{0}\" — must be 'none', 'read_only', or 'read_write'")]
    Unknown(String),
    /// `read_only`/`read_write` without a `workspace_dir`.
    #[error("workspace_access=\"{0}\" requires workspace_dir to be set")]
    RequiresDir(String),
}

/// Parses `workspace_access` (§1.7, §3.7): empty means [`WorkspaceAccess::None`]; a mounting mode
/// requires a non-empty `workspace_dir`.
pub fn validate_workspace_access(
    access: &str,
    workspace_dir: &str,
) -> Result<WorkspaceAccess, AccessError> {
    let parsed = match access {
        "" | "none" => return Ok(WorkspaceAccess::None),
        "read_only" => WorkspaceAccess::ReadOnly,
        "read_write" => WorkspaceAccess::ReadWrite,
        other => return Err(AccessError::Unknown(other.to_owned())),
    };
    if workspace_dir.is_empty() {
        return Err(AccessError::RequiresDir(access.to_owned()));
    }
    Ok(parsed)
}

/// How the platform delivers inbound A2A messages to a workspace (§1.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The platform POSTs to the workspace URL (which must pass the SSRF checks).
    #[default]
    Push,
    /// The platform queues messages as activity rows that the agent polls.
    Poll,
}

impl DeliveryMode {
    /// The wire value: `push` or `poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Poll => "poll",
        }
    }

    /// Parses exactly `push` or `poll`; anything else, including the empty string, is `None`
    /// (callers apply the default first).
    pub fn parse(s: &str) -> Option<DeliveryMode> {
        match s {
            "push" => Some(Self::Push),
            "poll" => Some(Self::Poll),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workspace isolation tier, always within 1..=4 (§1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "i64")]
pub struct Tier(u8);

/// A tier outside 1..=4. The reference never range-checks tiers; berth does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("tier must be between 1 and 4")]
pub struct TierError;

impl Tier {
    /// The tier used when the caller asks for none (`Privileged`).
    pub const DEFAULT: Tier = Tier(3);

    /// The tier number, 1..=4.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Resolves a requested tier at Create: 0 (omitted) means [`Tier::DEFAULT`], 1..=4 is taken
    /// as is, anything else is rejected.
    pub fn resolve(requested: i64) -> Result<Tier, TierError> {
        if requested == 0 {
            return Ok(Self::DEFAULT);
        }
        Tier::try_from(requested)
    }
}

impl TryFrom<i64> for Tier {
    type Error = TierError;

    /// Strict conversion: only 1..=4 (no defaulting of 0).
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        match u8::try_from(value) {
            Ok(n @ 1..=4) => Ok(Tier(n)),
            _ => Err(TierError),
        }
    }
}

impl From<Tier> for u8 {
    fn from(tier: Tier) -> u8 {
        tier.0
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why [`resolve_inside_root`] rejected a user-supplied path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// The path contains a NUL byte, which no file system accepts.
    #[error("path contains a nul byte")]
    Nul,
    /// The path is absolute.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// The cleaned path is neither the root nor below it.
    #[error("path escapes root")]
    EscapesRoot,
}

/// Joins a user-supplied relative path onto `root` (already absolute) and returns the cleaned
/// result if it is `root` itself or lies below it (§3.3). Purely lexical: symlinks are not
/// followed, so callers must not trust a symlinked tree.
pub fn resolve_inside_root(root: &Path, user_path: &str) -> Result<PathBuf, PathError> {
    if user_path.is_empty() {
        return Err(PathError::Empty);
    }
    if user_path.contains('\0') {
        return Err(PathError::Nul);
    }
    if user_path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let root = clean_components(root);
    let candidate = clean_components(&root.join(user_path));
    // `Path::starts_with` compares whole components, so `/rootx` is not under `/root`.
    if candidate.starts_with(&root) {
        Ok(candidate)
    } else {
        Err(PathError::EscapesRoot)
    }
}

/// [`clean_path`] over `Path` components, so non-UTF-8 roots survive untouched.
fn clean_components(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(component),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// Resolves `max_concurrent_tasks` at Create (§1.9): zero, negative or omitted means 1.
pub fn max_concurrent_tasks(requested: i64) -> i64 {
    if requested <= 0 { 1 } else { requested }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_msg(name: &str, role: &str, model: &str, runtime: &str) -> String {
        match validate_workspace_fields(name, role, model, runtime) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn fields_accept_empty_and_normal_values() {
        assert_eq!(field_msg("", "", "", ""), "ok");
        assert_eq!(
            field_msg("Alpha", "does things", "anthropic/claude", "hermes"),
            "ok"
        );
    }

    #[test]
    fn fields_newline_messages() {
        assert_eq!(
            field_msg("a\nb", "", "", ""),
            "name must not contain newline characters"
        );
        assert_eq!(
            field_msg("", "a\rb", "", ""),
            "role must not contain newline characters"
        );
        assert_eq!(
            field_msg("", "", "m\n", ""),
            "model must not contain newline characters"
        );
        assert_eq!(
            field_msg("", "", "", "\r"),
            "runtime must not contain newline characters"
        );
    }

    #[test]
    fn fields_invalid_character_messages() {
        for c in ['{', '}', '[', ']', '|', '>', '*', '&', '!'] {
            assert_eq!(
                field_msg(&format!("a{c}b"), "", "", ""),
                "name contains invalid characters"
            );
            assert_eq!(
                field_msg("", &format!("{c}"), "", ""),
                "role contains invalid characters"
            );
        }
        // Model and runtime are not checked for these characters.
        assert_eq!(field_msg("", "", "a*b", "x|y"), "ok");
        // `<`, `#`, `:` and quotes are allowed.
        assert_eq!(field_msg("a<b #c: \"d'", "", "", ""), "ok");
    }

    #[test]
    fn fields_length_messages_use_bytes() {
        assert_eq!(field_msg(&"a".repeat(255), "", "", ""), "ok");
        assert_eq!(
            field_msg(&"a".repeat(256), "", "", ""),
            "name must be at most 255 characters"
        );
        // 128 two-byte characters = 256 bytes.
        assert_eq!(
            field_msg(&"é".repeat(128), "", "", ""),
            "name must be at most 255 characters"
        );
        assert_eq!(field_msg("", &"r".repeat(1000), "", ""), "ok");
        assert_eq!(
            field_msg("", &"r".repeat(1001), "", ""),
            "role must be at most 1000 characters"
        );
        assert_eq!(
            field_msg("", "", &"m".repeat(101), ""),
            "model must be at most 100 characters"
        );
        assert_eq!(
            field_msg("", "", "", &"x".repeat(101)),
            "runtime must be at most 100 characters"
        );
    }

    #[test]
    fn fields_check_order() {
        // A newline in the runtime beats forbidden characters and lengths in the name.
        assert_eq!(
            field_msg(&"!".repeat(300), "", "", "a\n"),
            "runtime must not contain newline characters"
        );
        // Invalid characters in the role beat the name's length.
        assert_eq!(
            field_msg(&"a".repeat(300), "&", "", ""),
            "role contains invalid characters"
        );
        // Name length beats role length.
        assert_eq!(
            field_msg(&"a".repeat(300), &"b".repeat(2000), "", ""),
            "name must be at most 255 characters"
        );
    }

    #[test]
    fn dir_rules() {
        assert_eq!(
            validate_workspace_dir("relative/x"),
            Err(DirError::NotAbsolute)
        );
        assert_eq!(validate_workspace_dir("/a..b"), Err(DirError::DotDot));
        assert_eq!(
            validate_workspace_dir("/home/../etc"),
            Err(DirError::DotDot)
        );
        assert_eq!(
            validate_workspace_dir("/etc"),
            Err(DirError::SystemDirectory("/etc"))
        );
        assert_eq!(
            validate_workspace_dir("//usr//local/"),
            Err(DirError::SystemDirectory("/usr"))
        );
        assert_eq!(
            validate_workspace_dir("/./var/./lib"),
            Err(DirError::SystemDirectory("/var"))
        );
        assert_eq!(
            validate_workspace_dir("/lib/"),
            Err(DirError::SystemDirectory("/lib"))
        );
        for ok in [
            "/",
            "/root",
            "/home/me/project",
            "/run",
            "/lib64",
            "/opt",
            "/etcetera",
            "/tmp",
        ] {
            assert_eq!(validate_workspace_dir(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            DirError::SystemDirectory("/etc").to_string(),
            "workspace_dir must not be inside system directory /etc"
        );
    }

    #[test]
    fn clean_path_matches_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("../../a", "../../a"),
            ("a/b/../c", "a/c"),
            ("/a/./b/", "/a/b"),
            ("a//b", "a/b"),
            ("a/..", "."),
            ("/a/b/../../..", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn access_values_and_messages() {
        assert_eq!(validate_workspace_access("", ""), Ok(WorkspaceAccess::None));
        assert_eq!(
            validate_workspace_access("none", ""),
            Ok(WorkspaceAccess::None)
        );
        assert_eq!(
            validate_workspace_access("read_only", "/srv/x"),
            Ok(WorkspaceAccess::ReadOnly)
        );
        assert_eq!(
            validate_workspace_access("read_write", "/srv/x"),
            Ok(WorkspaceAccess::ReadWrite)
        );
        assert_eq!(
            validate_workspace_access("rw", "/srv/x").map_err(|e| e.to_string()),
            Err(
                "workspace_access=\"rw\" — must be 'none', 'read_only', or 'read_write'".to_owned()
            )
        );
        assert_eq!(
            validate_workspace_access("READ_ONLY", "/srv/x").map_err(|e| e.to_string()),
            Err(
                "workspace_access=\"READ_ONLY\" — must be 'none', 'read_only', or 'read_write'"
                    .to_owned()
            )
        );
        assert_eq!(
            validate_workspace_access("read_only", "").map_err(|e| e.to_string()),
            Err("workspace_access=\"read_only\" requires workspace_dir to be set".to_owned())
        );
        assert_eq!(WorkspaceAccess::ReadWrite.as_str(), "read_write");
        assert_eq!(WorkspaceAccess::default(), WorkspaceAccess::None);
    }

    #[test]
    fn access_serde_is_snake_case() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&WorkspaceAccess::ReadOnly)?,
            "\"read_only\""
        );
        let parsed: WorkspaceAccess = serde_json::from_str("\"read_write\"")?;
        assert_eq!(parsed, WorkspaceAccess::ReadWrite);
        assert_eq!(serde_json::to_string(&WorkspaceAccess::None)?, "\"none\"");
        Ok(())
    }

    #[test]
    fn delivery_mode_parse() {
        assert_eq!(DeliveryMode::parse("push"), Some(DeliveryMode::Push));
        assert_eq!(DeliveryMode::parse("poll"), Some(DeliveryMode::Poll));
        assert_eq!(DeliveryMode::parse(""), None);
        assert_eq!(DeliveryMode::parse("Push"), None);
        assert_eq!(DeliveryMode::parse(" poll"), None);
        assert_eq!(DeliveryMode::default(), DeliveryMode::Push);
        assert_eq!(DeliveryMode::Poll.as_str(), "poll");
        assert_eq!(DeliveryMode::Push.to_string(), "push");
    }

    #[test]
    fn tier_resolution() {
        assert_eq!(Tier::resolve(0).map(Tier::get), Ok(3));
        for n in 1..=4 {
            assert_eq!(
                Tier::resolve(n).map(Tier::get),
                Ok(u8::try_from(n).unwrap_or(0))
            );
        }
        for bad in [-1, 5, 256, 259, i64::MAX, i64::MIN] {
            assert_eq!(Tier::resolve(bad), Err(TierError), "{bad}");
        }
        assert_eq!(TierError.to_string(), "tier must be between 1 and 4");
        assert_eq!(Tier::DEFAULT.get(), 3);
        assert_eq!(Tier::try_from(0), Err(TierError));
    }

    #[test]
    fn tier_serde() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&Tier::DEFAULT)?, "3");
        let t: Tier = serde_json::from_str("2")?;
        assert_eq!(t.get(), 2);
        assert!(serde_json::from_str::<Tier>("7").is_err());
        assert!(serde_json::from_str::<Tier>("0").is_err());
        Ok(())
    }

    #[test]
    fn inside_root_accepts_children_and_root() {
        let root = Path::new("/srv/templates");
        assert_eq!(
            resolve_inside_root(root, "hermes"),
            Ok(PathBuf::from("/srv/templates/hermes"))
        );
        assert_eq!(
            resolve_inside_root(root, "a/./b/../c/"),
            Ok(PathBuf::from("/srv/templates/a/c"))
        );
        assert_eq!(
            resolve_inside_root(root, "."),
            Ok(PathBuf::from("/srv/templates"))
        );
        assert_eq!(
            resolve_inside_root(root, "a/.."),
            Ok(PathBuf::from("/srv/templates"))
        );
        // A root given uncleaned is cleaned first.
        assert_eq!(
            resolve_inside_root(Path::new("/srv//templates/"), "x"),
            Ok(PathBuf::from("/srv/templates/x"))
        );
        assert_eq!(
            resolve_inside_root(Path::new("/"), "etc"),
            Ok(PathBuf::from("/etc"))
        );
    }

    #[test]
    fn inside_root_rejections() {
        let root = Path::new("/srv/templates");
        assert_eq!(resolve_inside_root(root, ""), Err(PathError::Empty));
        assert_eq!(resolve_inside_root(root, "/etc"), Err(PathError::Absolute));
        assert_eq!(resolve_inside_root(root, ".."), Err(PathError::EscapesRoot));
        assert_eq!(
            resolve_inside_root(root, "../templatesx"),
            Err(PathError::EscapesRoot)
        );
        assert_eq!(
            resolve_inside_root(root, "a/../../x"),
            Err(PathError::EscapesRoot)
        );
        assert_eq!(resolve_inside_root(root, "a\0b"), Err(PathError::Nul));
        assert_eq!(PathError::Empty.to_string(), "path is empty");
        assert_eq!(
            PathError::Absolute.to_string(),
            "absolute paths are not allowed"
        );
        assert_eq!(PathError::EscapesRoot.to_string(), "path escapes root");
    }

    #[test]
    fn max_concurrent_tasks_defaults_to_one() {
        assert_eq!(max_concurrent_tasks(0), 1);
        assert_eq!(max_concurrent_tasks(-5), 1);
        assert_eq!(max_concurrent_tasks(1), 1);
        assert_eq!(max_concurrent_tasks(8), 8);
    }
}

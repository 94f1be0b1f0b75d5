//! The port for looking inside a running workspace: its files, one-shot commands and terminals
//! (`/workspaces/{id}/files…`, `/exec`, `/terminal`; REFERENCE-3.md, issue #14).
//!
//! Each backend implements the [`Provisioner`](crate::Provisioner) methods `list_files`,
//! `read_file`, `write_files`, `delete_file`, `exec` and `open_terminal` in its own terms (the
//! Docker Engine's archive and exec APIs, the process backend's host directories and a PTY); the
//! defaults answer [`InsideError::Unsupported`], which is what a backend without a way in (the
//! control plane, no backend) says. The core decides who may ask, which root a path is under, what
//! is persisted and audited; a backend only has to stay beneath the root it was given.
//!
//! Path safety is the backend's duty as well as the caller's: a [`RelPath`] is lexically clean
//! (no `..`, no absolute path, no NUL), and a backend must also refuse to cross a symbolic link
//! the agent planted (or resolve it without leaving the root) and refuse device files, FIFOs and
//! sockets, answering [`InsideError::Refused`].

use std::fmt;
use std::time::{Duration, SystemTime};

use berth_domain::WorkspaceId;
use tokio::sync::{mpsc, oneshot};

/// One of the directories the files API reaches (REFERENCE-3.md §1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRoot {
    /// `/configs`: the agent's configuration (template copy, config.yaml, prompts). The
    /// provisioner rebuilds it at every start; the core keeps the files written through the API
    /// and hands them to every start, so they survive a restart.
    Configs,
    /// `/workspace`: the agent's working directory (its volume or the shared host directory).
    Workspace,
    /// `/home` of the container (Docker only).
    Home,
    /// `/plugins` of the container (Docker only).
    Plugins,
}

impl FileRoot {
    /// Every root, in the order of the reference's error message.
    pub const ALL: [FileRoot; 4] = [
        FileRoot::Configs,
        FileRoot::Workspace,
        FileRoot::Home,
        FileRoot::Plugins,
    ];

    /// The root as the API names it, which is also its path inside a container.
    pub fn as_str(self) -> &'static str {
        match self {
            FileRoot::Configs => "/configs",
            FileRoot::Workspace => "/workspace",
            FileRoot::Home => "/home",
            FileRoot::Plugins => "/plugins",
        }
    }

    /// The root named `s` (exact match), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for FileRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A path relative to a [`FileRoot`], lexically clean: `/`-separated components, none empty,
/// `.` or `..`, none containing NUL; `./a//b/` is `a/b`. The empty path is the root itself
/// (for listings). Unlike the reference, a name merely containing `..` (`notes..md`) is fine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath {
    components: Vec<String>,
}

/// Why a path is not a [`RelPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    /// Starts with `/`.
    #[error("absolute paths not permitted")]
    Absolute,
    /// Has a `..` component.
    #[error("path escapes its root")]
    ParentDir,
    /// Has a NUL or another control character.
    #[error("path contains a control character")]
    ControlCharacter,
    /// Longer than [`RelPath::MAX_LEN`] bytes or [`RelPath::MAX_DEPTH`] components.
    #[error("path is too long")]
    TooLong,
}

impl RelPath {
    /// Longest accepted path, in bytes (Linux's `PATH_MAX`).
    pub const MAX_LEN: usize = 4096;
    /// Most components accepted.
    pub const MAX_DEPTH: usize = 64;

    /// The root itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a relative path (see the type's docs).
    pub fn parse(s: &str) -> Result<Self, RelPathError> {
        if s.len() > Self::MAX_LEN {
            return Err(RelPathError::TooLong);
        }
        if s.starts_with('/') {
            return Err(RelPathError::Absolute);
        }
        if s.chars().any(char::is_control) {
            return Err(RelPathError::ControlCharacter);
        }
        let mut components = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(RelPathError::ParentDir),
                name => components.push(name.to_owned()),
            }
        }
        if components.len() > Self::MAX_DEPTH {
            return Err(RelPathError::TooLong);
        }
        Ok(Self { components })
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The components, in order.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The last component (`None` for the root).
    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The path without its last component (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        let mut components = self.components.clone();
        components.pop();
        Self { components }
    }

    /// `self/name`, for a single clean component `name`.
    pub fn join(&self, name: &str) -> Result<RelPath, RelPathError> {
        let mut joined = Self::parse(name)?;
        let mut components = self.components.clone();
        components.append(&mut joined.components);
        Ok(Self { components })
    }
}

impl fmt::Display for RelPath {
    /// `a/b/c`; the root is the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

/// Which workspace to look into, with what the backend cannot know on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The workspace.
    pub id: WorkspaceId,
    /// The host directory shared as its workspace directory (`workspace_dir`), if any: the
    /// process backend's `/workspace` then is that directory, as the agent's working directory.
    pub workspace_dir: Option<String>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the listed directory, `/`-separated, no leading slash.
    pub path: String,
    /// Bytes; 0 for a directory.
    pub size: u64,
    /// A directory.
    pub dir: bool,
    /// Last modification, when the backend knows it.
    pub modified: Option<SystemTime>,
}

/// Names whose contents a listing does not descend into (the entries themselves are listed),
/// and `.DS_Store`, which is not listed at all (REFERENCE-3.md §1.2.5).
pub const LISTING_PRUNED_DIRS: [&str; 3] = [".git", "__pycache__", "node_modules"];
/// See [`LISTING_PRUNED_DIRS`].
pub const LISTING_SKIPPED_FILES: [&str; 1] = [".DS_Store"];

/// The greatest listing depth.
pub const MAX_LIST_DEPTH: u8 = 5;

/// A one-shot command (`POST /workspaces/{id}/exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments; never run through a shell by the backend.
    pub cmd: Vec<String>,
    /// Working directory as the workspace sees it (`/workspace/sub`, `/configs`); `None` is the
    /// workspace directory (or `/configs` where there is none).
    pub cwd: Option<String>,
    /// Extra environment, over what the backend sets.
    pub env: Vec<(String, String)>,
    /// Given on standard input, which is then closed (empty: closed at once).
    pub stdin: Vec<u8>,
    /// After this long the command and everything it started are killed.
    pub timeout: Duration,
    /// Bytes kept of stdout and of stderr each; the rest is read and dropped.
    pub output_limit: usize,
}

/// What a one-shot command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The exit code; `None` when it was killed (timeout) or the backend could not tell.
    pub exit_code: Option<i64>,
    /// Standard output, at most `output_limit` bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most `output_limit` bytes.
    pub stderr: Vec<u8>,
    /// Whether either stream was cut at `output_limit`.
    pub truncated: bool,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    /// Rows (lines).
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TermSize {
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// What the client sends to a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Bytes for the shell's standard input (keystrokes, a paste), unchanged.
    Data(Vec<u8>),
    /// The client's window changed size.
    Resize(TermSize),
}

/// An open interactive shell with a TTY.
///
/// The session lives as long as `input` does: dropping the sender ends it, and the backend then
/// kills the shell and everything it started (on Docker the exec's process group inside the
/// container, on the process backend the PTY's process group) and releases the connection.
/// `output` ends when the shell exits (or the session is ended); `exit` then carries the shell's
/// exit code when the backend knows it.
#[derive(Debug)]
pub struct Terminal {
    /// Keystrokes and resizes; drop it to end the session.
    pub input: mpsc::Sender<TerminalInput>,
    /// The terminal's output, in chunks of at most [`TERMINAL_CHUNK`] bytes, not assumed UTF-8.
    pub output: mpsc::Receiver<Vec<u8>>,
    /// The shell's exit code once it exited (`None` when killed or unknown). Dropped without a
    /// value when the backend cannot tell.
    pub exit: oneshot::Receiver<Option<i64>>,
}

/// Largest chunk of terminal output handed over at once (the reference's 4096).
pub const TERMINAL_CHUNK: usize = 4096;

/// Why a look inside failed. The core maps each to a status: 404, 409, 501, 400, 413, 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsideError {
    /// The file or directory does not exist.
    #[error("file not found")]
    NotFound,
    /// There is nothing running to look into (no container, stopped): the message says what.
    #[error("{0}")]
    NotRunning(String),
    /// The backend has no way in (the message says why).
    #[error("{0}")]
    Unsupported(String),
    /// The path or request is refused: it crosses a symbolic link, names a device file, a
    /// directory where a file is needed, a working directory outside the workspace, …
    #[error("{0}")]
    Refused(String),
    /// The file is larger than the limit.
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The backend itself failed (daemon unreachable, I/O error).
    #[error("{0}")]
    Backend(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_are_clean_and_stay_beneath() {
        assert_eq!(RelPath::parse("./a//b/").unwrap().to_string(), "a/b");
        assert_eq!(
            RelPath::parse("notes..md").unwrap().to_string(),
            "notes..md"
        );
        assert!(RelPath::parse("").unwrap().is_root());
        assert!(RelPath::parse(".").unwrap().is_root());
        assert_eq!(RelPath::parse("/etc/passwd"), Err(RelPathError::Absolute));
        assert_eq!(RelPath::parse("a/../../b"), Err(RelPathError::ParentDir));
        assert_eq!(RelPath::parse(".."), Err(RelPathError::ParentDir));
        assert_eq!(RelPath::parse("a\0b"), Err(RelPathError::ControlCharacter));
        assert_eq!(RelPath::parse("a\nb"), Err(RelPathError::ControlCharacter));
        assert_eq!(RelPath::parse(&"a/".repeat(65)), Err(RelPathError::TooLong));
        let p = RelPath::parse("a/b/c.txt").unwrap();
        assert_eq!(p.file_name(), Some("c.txt"));
        assert_eq!(p.parent().to_string(), "a/b");
        assert_eq!(p.parent().join("d").unwrap().to_string(), "a/b/d");
        assert!(p.join("../x").is_err());
    }

    #[test]
    fn roots_parse_exactly() {
        for root in FileRoot::ALL {
            assert_eq!(FileRoot::parse(root.as_str()), Some(root));
        }
        assert_eq!(FileRoot::parse("/configs/"), None);
        assert_eq!(FileRoot::parse(""), None);
        assert_eq!(FileRoot::parse("/agent-home"), None);
    }
}

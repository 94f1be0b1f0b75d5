//! Inside a workspace: files (`/workspaces/{id}/files…`, REFERENCE-3.md §1), one-shot commands
//! (`POST /workspaces/{id}/exec`, berth's) and the terminal's control messages and diagnosis
//! (`/workspaces/{id}/terminal…`, §2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The query of the files routes. Strings, so that a bad value gets the reference's own error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// `/configs` (the default when absent), `/workspace`, `/home`, `/plugins`; `/agent-home` is
    /// refused with 501 as in the reference.
    pub root: Option<String>,
    /// Listing only: the directory under the root to list (relative).
    pub path: Option<String>,
    /// Listing only: levels to descend, 1–5 (default 1).
    pub depth: Option<String>,
}

/// One entry of `GET /workspaces/{id}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Relative to the listed directory, `/`-separated.
    pub path: String,
    /// Bytes; 0 for a directory.
    pub size: u64,
    /// A directory.
    pub dir: bool,
    /// berth: last modification, RFC 3339, when the backend knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// `GET /workspaces/{id}/files/{path}` as JSON (the reference's shape). Ask for
/// `Accept: application/octet-stream` to get the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileContent {
    /// The path as asked.
    pub path: String,
    /// The content; a file that is not UTF-8 has its invalid bytes replaced (U+FFFD): read it as
    /// `application/octet-stream` instead.
    pub content: String,
    /// The file's size in bytes (of the file, not of `content`).
    pub size: u64,
}

/// The JSON body of `PUT /workspaces/{id}/files/{path}` (or send the bytes as
/// `Content-Type: application/octet-stream`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WriteFile {
    /// The new content (absent: an empty file).
    #[serde(default)]
    pub content: String,
}

/// The answer of a file write (`status: "saved"`) or delete (`status: "deleted"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileSaved {
    /// `saved` or `deleted`.
    pub status: String,
    /// The path as given.
    pub path: String,
    /// berth: the root it happened under.
    pub root: String,
    /// berth: `container` (the running workspace) or `stored` (a `/configs` change of a workspace
    /// that does not run: applied at its next start).
    pub source: String,
    /// berth: whether a restart was scheduled (a `/configs` change of a running workspace).
    pub restart_scheduled: bool,
}

/// The body of `PUT /workspaces/{id}/files`: files to write under the root (an overlay: other
/// files stay), at most 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplaceFiles {
    /// Relative path → content.
    pub files: BTreeMap<String, String>,
}

/// The answer of `PUT /workspaces/{id}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FilesReplaced {
    /// `replaced`.
    pub status: String,
    /// The workspace id.
    pub workspace: String,
    /// How many files were written.
    pub files: usize,
    /// `container` or `stored` (see [`FileSaved::source`]).
    pub source: String,
    /// berth: whether a restart was scheduled.
    pub restart_scheduled: bool,
}

/// The body of `POST /workspaces/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecBody {
    /// Program and arguments (never run through a shell; use `["sh", "-c", "…"]` for one).
    pub cmd: Vec<String>,
    /// Working directory as the workspace sees it (`/workspace/sub`); default the workspace
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds before the command (and everything it started) is killed; at most the server's
    /// `--exec-max-timeout-secs`, which is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Text given on standard input (then closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// The answer of `POST /workspaces/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// The exit code; `null` when the timeout killed it.
    pub exit_code: Option<i64>,
    /// Standard output (invalid UTF-8 replaced), at most `--exec-output-limit` bytes.
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Whether stdout or stderr was cut at the limit.
    pub truncated: bool,
}

/// The query of `GET /workspaces/{id}/terminal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// The credential, for browsers (which cannot set `Authorization` on a WebSocket).
    pub token: Option<String>,
    /// Initial rows (default 24).
    pub rows: Option<u16>,
    /// Initial columns (default 80).
    pub cols: Option<u16>,
}

/// The name of berth's terminal WebSocket subprotocol: binary frames carry the terminal's
/// bytes both ways, text frames carry [`TerminalControl`] JSON.
pub const TERMINAL_SUBPROTOCOL: &str = "berth.terminal.v1";

/// A control message of the `berth.terminal.v1` subprotocol (a text frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalControl {
    /// Client → server: the window's size changed.
    Resize {
        /// Rows, 1–1000.
        rows: u16,
        /// Columns, 1–1000.
        cols: u16,
    },
    /// Server → client: the shell ended (`reason`: `exit`, `idle`, `max_session`, `error`), with
    /// its exit code when known. The server closes the socket after it.
    Exit {
        /// The shell's exit code.
        code: Option<i64>,
        /// Why the session ended.
        reason: String,
    },
    /// Server → client: something went wrong (a malformed control message, …).
    Error {
        /// What.
        message: String,
    },
}

/// `GET /workspaces/{id}/terminal/diagnose` (REFERENCE-3.md §2.7 shape; berth's local steps:
/// `workspace`, `terminal-enabled`, `running`, `shell-probe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerminalDiagnosis {
    /// The workspace.
    pub workspace_id: String,
    /// Always false: berth has no remote (EC2) terminal.
    pub remote: bool,
    /// Whether every step passed.
    pub ok: bool,
    /// The name of the failing step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// The passed steps, then the failing one.
    pub steps: Vec<DiagnosisStep>,
}

/// One step of a [`TerminalDiagnosis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiagnosisStep {
    /// Its name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub duration_ms: i64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_tagged_json() {
        let resize: TerminalControl =
            serde_json::from_str(r#"{"type":"resize","rows":40,"cols":120}"#).unwrap();
        assert_eq!(
            resize,
            TerminalControl::Resize {
                rows: 40,
                cols: 120
            }
        );
        let exit = TerminalControl::Exit {
            code: Some(7),
            reason: "exit".into(),
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap(),
            r#"{"type":"exit","code":7,"reason":"exit"}"#
        );
        assert!(
            serde_json::from_str::<TerminalControl>(r#"{"type":"resize","rows":-1,"cols":2}"#)
                .is_err()
        );
    }

    #[test]
    fn write_file_without_content_is_empty() {
        let w: WriteFile = serde_json::from_str("{}").unwrap();
        assert_eq!(w.content, "");
        assert!(serde_json::from_str::<WriteFile>(r#"{"content": 3}"#).is_err());
    }
}

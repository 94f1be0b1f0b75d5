//! Inside a workspace: files (`/workspaces/{id}/files…`, REFERENCE-3.md §1), one-shot commands
//! (`POST /workspaces/{id}/exec`) and the terminal WebSocket with its diagnosis (§2).
//!
//! The reference's wire shapes are kept (JSON `{"content"}` bodies and answers, `?root=`,
//! `?depth=`, the bulk `{"files"}` overlay, its error strings), with its bugs fixed (§3): DELETE
//! works through the router (the catch-all's leading slash is not "absolute"), the backend's
//! answer is checked (a missing file is 404, not an empty 200), nothing is trimmed or silently
//! cut (413 past the limit), writes land at `<root>/<path>` for every root, nothing goes through
//! a shell. berth adds raw bytes (`Accept` / `Content-Type: application/octet-stream`), sizes
//! and modification times in listings, and atomic writes (the backend's).
//!
//! The terminal speaks the reference's protocol (client frames are keystrokes, binary frames
//! are output, Close 1000 at the end) unless the client offers the `berth.terminal.v1`
//! subprotocol: then binary frames are bytes both ways and text frames are JSON control messages
//! (`resize`, and from the server `exit` and `error`). Either way the session ends — and the
//! shell with everything it started is killed — when the socket closes, when it has been idle
//! (no input, no output) for `--terminal-idle-timeout-secs` from its start, or after
//! `--terminal-max-session-secs`; frames are bounded; sessions per workspace are bounded.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::ErrorBody;
use berth_api::inside::{
    DiagnosisStep, ExecBody, ExecResult, FileContent, FileEntry, FileSaved, FilesQuery,
    FilesReplaced, ReplaceFiles, TERMINAL_SUBPROTOCOL, TerminalControl, TerminalDiagnosis,
    TerminalQuery, WriteFile,
};
use berth_core::berth_provision::inside::MAX_LIST_DEPTH;
use berth_core::berth_provision::{
    ExecRequest, FileRoot, InsideError, RelPath, TermSize, Terminal, TerminalInput,
};
use berth_core::{FileChange, InsideFailure, Principal, TerminalSession};
use berth_domain::WorkspaceId;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Bearer, WorkspaceAuth, workspace_principal};
use crate::extract::{ApiPath, ApiQuery, Body, refuse_nul};
use crate::{ApiError, AppState};

/// Most entries of a bulk replace (the reference's).
pub const REPLACE_MAX_FILES: usize = 200;
/// Largest WebSocket message a terminal client may send.
pub const TERMINAL_MAX_MESSAGE: usize = 64 * 1024;
/// Most arguments of an exec's command.
const EXEC_MAX_ARGS: usize = 1024;
/// Largest terminal size accepted.
const TERM_MAX_CELLS: u16 = 1000;
/// The reference's list of roots, in its error message.
const ROOTS_MESSAGE: &str =
    "root must be one of: /configs, /workspace, /home, /plugins, /agent-home";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // The write routes read their bodies themselves, bounded by `--max-file-bytes` (a file can
    // be larger than the server's default body limit); `route_layer` applies to the routes
    // registered before it.
    OpenApiRouter::new()
        .routes(routes!(write_file))
        .routes(routes!(replace_files))
        .route_layer(DefaultBodyLimit::disable())
        .routes(routes!(list_files))
        .routes(routes!(read_file, delete_file))
        .routes(routes!(exec))
        .routes(routes!(terminal))
        .routes(routes!(diagnose))
}

impl From<InsideFailure> for ApiError {
    fn from(e: InsideFailure) -> Self {
        match e {
            InsideFailure::WorkspaceNotFound => ApiError::NotFound("workspace not found"),
            e @ InsideFailure::External => ApiError::Conflict(e.to_string()),
            InsideFailure::NotRunning { status, detail } => ApiError::Custom(
                StatusCode::CONFLICT,
                json!({"error": format!("workspace is {status}: {detail}"), "status": status.as_str()}),
            ),
            e @ InsideFailure::HostShellDisabled => {
                ApiError::Custom(StatusCode::FORBIDDEN, json!({"error": e.to_string()}))
            }
            e @ InsideFailure::TooManySessions(_) => ApiError::Custom(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": e.to_string()}),
            ),
            InsideFailure::Invalid(m) => ApiError::BadRequest(m),
            e @ InsideFailure::Credential(_) => {
                ApiError::Custom(StatusCode::FORBIDDEN, json!({"error": e.to_string()}))
            }
            InsideFailure::Inside(e) => inside_error(e),
            InsideFailure::Store(public, cause) => ApiError::internal(public, cause),
        }
    }
}

fn inside_error(e: InsideError) -> ApiError {
    match e {
        InsideError::NotFound => ApiError::NotFound("file not found"),
        InsideError::NotRunning(m) => ApiError::Conflict(m),
        InsideError::Unsupported(m) => {
            ApiError::Custom(StatusCode::NOT_IMPLEMENTED, json!({"error": m}))
        }
        InsideError::Refused(m) => ApiError::BadRequest(m),
        e @ InsideError::TooLarge { .. } => ApiError::Custom(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": e.to_string()}),
        ),
        InsideError::Backend(m) => {
            // The daemon's or the file system's words stay in the log (REFERENCE-3.md §3.13).
            tracing::warn!(error = %m, "workspace backend failed");
            ApiError::Custom(
                StatusCode::BAD_GATEWAY,
                json!({"error": "the workspace's backend failed; see the server log"}),
            )
        }
    }
}

/// `?root=`: absent is `/configs`; present must be one of the roots (empty too is refused).
fn root_of(root: Option<&str>) -> Result<FileRoot, ApiError> {
    match root {
        None => Ok(FileRoot::Configs),
        Some("/agent-home") => Err(ApiError::Custom(
            StatusCode::NOT_IMPLEMENTED,
            json!({"error": "/agent-home is not implemented: use /home (Docker) or /workspace"}),
        )),
        Some(r) => FileRoot::parse(r).ok_or_else(|| ApiError::BadRequest(ROOTS_MESSAGE.into())),
    }
}

/// A relative path of the API. axum's catch-all holds the rest of the path without its leading
/// `/` (the reference's router kept it, and then refused every DELETE as "absolute", §3.1), so
/// a value that still starts with `/` (`…/files//etc/passwd`) is absolute.
fn rel_path(raw: &str) -> Result<RelPath, ApiError> {
    RelPath::parse(raw).map_err(|e| {
        ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid path", "hint": e.to_string()}),
        )
    })
}

/// The file path of a `…/files/{*path}` route: non-empty.
fn file_path(raw: &str) -> Result<RelPath, ApiError> {
    let path = rel_path(raw)?;
    if path.is_root() {
        return Err(ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid path", "hint": "the path is empty"}),
        ));
    }
    Ok(path)
}

/// A JSON object body as `T` (serde would also take a struct from an array): 400
/// `invalid request body` otherwise.
fn object_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = || ApiError::BadRequest("invalid request body".into());
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => serde_json::from_value(v).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

fn wants_bytes(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|m| m.trim().starts_with("application/octet-stream"))
        })
}

fn sends_bytes(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/octet-stream"))
}

fn rfc3339(t: std::time::SystemTime) -> Option<String> {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The body of a write route, at most `limit` bytes (413 past it).
async fn body_within(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            // `to_bytes` reports the limit as a length-limit error in its source chain.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("invalid request body".into())
            }
        })
}

/// How many body bytes a write may carry: the file limit, and room for JSON's escapes.
fn body_limit(state: &AppState, json: bool) -> usize {
    let max = usize::try_from(state.service.inside_config().max_file_bytes).unwrap_or(usize::MAX);
    if json {
        max.saturating_mul(2).saturating_add(64 * 1024)
    } else {
        max
    }
}

fn saved(status: &str, path: &RelPath, root: FileRoot, change: FileChange) -> FileSaved {
    FileSaved {
        status: status.into(),
        path: path.to_string(),
        root: root.as_str().into(),
        source: change.source.into(),
        restart_scheduled: change.restart_scheduled,
    }
}

/// The entries under a directory.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/files",
    tag = "files",
    description = "Lists `path` (default: the root) under `root`, `depth` levels deep, sorted by path; the contents of `.git`, `node_modules` and `__pycache__` are not descended into, `.DS_Store`, symbolic links and device files are not listed, nor the agent's credential files (`/configs/.auth_token`, `/configs/.platform_inbound_secret`). External workspaces: 409. A backend with nothing running: 409 with the `status` (the process backend's files stay readable).",
    security(("admin" = []), ("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), FilesQuery),
    responses(
        (status = 200, description = "The entries.", body = Vec<FileEntry>),
        (status = 400, description = "`root must be one of: …`, `invalid path`, `depth must be 1-5`, `path crosses a symbolic link: …`, `not a directory`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`, `file not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 501, description = "`/agent-home`, or a backend without a way in (control plane).", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn list_files(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiQuery(q): ApiQuery<FilesQuery>,
) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let root = root_of(q.root.as_deref())?;
    let dir = rel_path(q.path.as_deref().unwrap_or(""))?;
    let depth = match q.depth.as_deref().filter(|d| !d.is_empty()) {
        None => 1,
        Some(d) => d
            .parse::<u8>()
            .ok()
            .filter(|d| (1..=MAX_LIST_DEPTH).contains(d))
            .ok_or_else(|| ApiError::BadRequest("depth must be 1-5".into()))?,
    };
    let entries = state.service.list_files(auth.id, root, &dir, depth).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| FileEntry {
                path: e.path,
                size: e.size,
                dir: e.dir,
                modified: e.modified.and_then(rfc3339),
            })
            .collect(),
    ))
}

/// One file.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    description = "Reads a file under `root`: JSON `{path, content, size}` (the reference's shape; invalid UTF-8 is replaced), or the exact bytes with `Accept: application/octet-stream`. Larger than `--max-file-bytes`: 413.",
    security(("admin" = []), ("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("path" = String, Path, description = "The file, relative to the root."),
        FilesQuery,
    ),
    responses(
        (status = 200, description = "The file: JSON, or its bytes when `Accept: application/octet-stream` asks for them.", content((FileContent = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "`root must be one of: …`, `invalid path`, `path is a directory`, `path crosses a symbolic link: …`, a device file.", body = ErrorBody),
        (status = 403, description = "`/configs/.auth_token` or `/configs/.platform_inbound_secret`: the agent's credentials, which the files API does not read, write or delete.", body = ErrorBody),
        (status = 404, description = "`workspace not found`, `file not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 413, description = "The file is larger than `--max-file-bytes`.", body = ErrorBody),
        (status = 501, description = "`/agent-home`, or a backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn read_file(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    ApiQuery(q): ApiQuery<FilesQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = file_path(params.get("path").map_or("", String::as_str))?;
    let root = root_of(q.root.as_deref())?;
    let bytes = state.service.read_file(auth.id, root, &path).await?;
    if wants_bytes(&headers) {
        return Ok((
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            bytes,
        )
            .into_response());
    }
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    Ok(Json(FileContent {
        path: path.to_string(),
        content: String::from_utf8_lossy(&bytes).into_owned(),
        size,
    })
    .into_response())
}

/// Writes one file.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    description = "Writes a file under `root` (default `/configs`), creating its directories, replacing it atomically. The body is JSON `{\"content\": \"…\"}` (the reference's), or the bytes themselves with `Content-Type: application/octet-stream`. Under `/configs` the file is also kept for every later start (the directory is rebuilt at each start) and a running workspace is restarted `--config-restart-delay-secs` after the last such change; under the other roots nothing restarts. A workspace that does not run gets a `/configs` change at its next start (`source: stored`); other roots answer 409.",
    security(("admin" = []), ("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("path" = String, Path, description = "The file, relative to the root."),
        FilesQuery,
    ),
    request_body(description = "JSON `{\"content\"}`, or the bytes with `Content-Type: application/octet-stream`.", content((WriteFile = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "`saved`.", body = FileSaved),
        (status = 400, description = "`invalid path`, `invalid request body`, `root must be one of: …`, a path through a symbolic link or onto a directory.", body = ErrorBody),
        (status = 403, description = "`/configs/.auth_token` or `/configs/.platform_inbound_secret`: the agent's credentials, which the files API does not read, write or delete.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 413, description = "The file is larger than `--max-file-bytes`.", body = ErrorBody),
        (status = 501, description = "`/agent-home`, or a backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn write_file(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    ApiQuery(q): ApiQuery<FilesQuery>,
    req: Request,
) -> Result<Json<FileSaved>, ApiError> {
    let path = file_path(params.get("path").map_or("", String::as_str))?;
    let raw = sends_bytes(req.headers());
    let body = body_within(req, body_limit(&state, !raw)).await?;
    let content = if raw {
        body.to_vec()
    } else {
        refuse_nul(&body)?;
        let w: WriteFile = object_body(&body)?;
        w.content.into_bytes()
    };
    let root = root_of(q.root.as_deref())?;
    let change = state
        .service
        .write_files(auth.principal, auth.id, root, vec![(path.clone(), content)])
        .await?;
    Ok(Json(saved("saved", &path, root, change)))
}

/// Deletes a file or a directory.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    description = "Deletes a file, a symbolic link (the link itself) or a directory with everything in it, under `root` (default `/configs`). Under `/configs` the deletion also holds for every later start and restarts a running workspace as a write does.",
    security(("admin" = []), ("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("path" = String, Path, description = "The file or directory, relative to the root."),
        FilesQuery,
    ),
    responses(
        (status = 200, description = "`deleted`.", body = FileSaved),
        (status = 400, description = "`invalid path`, `root must be one of: …`, a path through a symbolic link.", body = ErrorBody),
        (status = 403, description = "`/configs/.auth_token` or `/configs/.platform_inbound_secret`: the agent's credentials, which the files API does not read, write or delete.", body = ErrorBody),
        (status = 404, description = "`workspace not found`, `file not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 501, description = "`/agent-home`, or a backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn delete_file(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    ApiQuery(q): ApiQuery<FilesQuery>,
) -> Result<Json<FileSaved>, ApiError> {
    let path = file_path(params.get("path").map_or("", String::as_str))?;
    let root = root_of(q.root.as_deref())?;
    let change = state
        .service
        .delete_file(auth.principal, auth.id, root, &path)
        .await?;
    Ok(Json(saved("deleted", &path, root, change)))
}

/// Writes many files at once.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/files",
    tag = "files",
    description = "Writes every file of `files` under `root` (default `/configs`) — an overlay: other files stay. At most 200 files; each path is checked before anything is written. `/configs` changes are kept and restart a running workspace as single writes do.",
    security(("admin" = []), ("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), FilesQuery),
    request_body = ReplaceFiles,
    responses(
        (status = 200, description = "`replaced`.", body = FilesReplaced),
        (status = 400, description = "`invalid request body`, `too many files (<n>), max 200`, `invalid path` (with the `path`).", body = ErrorBody),
        (status = 403, description = "`/configs/.auth_token` or `/configs/.platform_inbound_secret`: the agent's credentials, which the files API does not read, write or delete.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 413, description = "A file larger than `--max-file-bytes`, or the body larger than twice that.", body = ErrorBody),
        (status = 501, description = "`/agent-home`, or a backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn replace_files(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiQuery(q): ApiQuery<FilesQuery>,
    req: Request,
) -> Result<Json<FilesReplaced>, ApiError> {
    let body = body_within(req, body_limit(&state, true)).await?;
    refuse_nul(&body)?;
    let r: ReplaceFiles = object_body(&body)?;
    if r.files.len() > REPLACE_MAX_FILES {
        return Err(ApiError::BadRequest(format!(
            "too many files ({}), max {REPLACE_MAX_FILES}",
            r.files.len()
        )));
    }
    let root = root_of(q.root.as_deref())?;
    let mut files = Vec::with_capacity(r.files.len());
    for (raw, content) in r.files {
        let path = file_path(&raw).map_err(|_| {
            ApiError::Custom(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid path", "path": raw}),
            )
        })?;
        files.push((path, content.into_bytes()));
    }
    let count = files.len();
    let change = state
        .service
        .write_files(auth.principal, auth.id, root, files)
        .await?;
    Ok(Json(FilesReplaced {
        status: "replaced".into(),
        workspace: auth.id.to_string(),
        files: count,
        source: change.source.into(),
        restart_scheduled: change.restart_scheduled,
    }))
}

/// Runs one command.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/exec",
    tag = "files",
    description = "Runs `cmd` (no shell) in the workspace as the agent's user, in `cwd` (default the workspace directory), to completion or `timeout_secs` (at most, and by default, `--exec-max-timeout-secs`; then it and everything it started are killed). stdout and stderr are kept up to `--exec-output-limit` bytes each (`truncated`). Recorded as an `exec` activity row (who and the command; never the input or output). On the process backend this is a command on the host: off unless the server runs with `--process-shell` (403).",
    security(("admin" = []), ("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "What the command did (a non-zero exit is still a 200).", body = ExecResult),
        (status = 400, description = "`invalid request body`, `cmd must name a program`, `command not found: …`, a `cwd` outside the workspace, an image without `/bin/sh`.", body = ErrorBody),
        (status = 403, description = "The process backend without `--process-shell`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 501, description = "A backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn exec(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    Body(body): Body,
) -> Result<Json<ExecResult>, ApiError> {
    let b: ExecBody = object_body(&body)?;
    if b.cmd.len() > EXEC_MAX_ARGS {
        return Err(ApiError::BadRequest(format!(
            "cmd has {} arguments, at most {EXEC_MAX_ARGS}",
            b.cmd.len()
        )));
    }
    let mut env = Vec::new();
    for (k, v) in b.env.unwrap_or_default() {
        if k.is_empty() || k.contains('=') {
            return Err(ApiError::BadRequest(format!(
                "invalid environment variable name {k:?}"
            )));
        }
        env.push((k, v));
    }
    if let Some(cwd) = &b.cwd
        && !cwd.starts_with('/')
    {
        return Err(ApiError::BadRequest("cwd must be an absolute path".into()));
    }
    let timeout = match b.timeout_secs {
        Some(0) => {
            return Err(ApiError::BadRequest(
                "timeout_secs must be at least 1".into(),
            ));
        }
        Some(s) => Duration::from_secs(s.min(u64::from(u32::MAX))),
        None => Duration::ZERO,
    };
    let request = ExecRequest {
        cmd: b.cmd,
        cwd: b.cwd,
        env,
        stdin: b.stdin.unwrap_or_default().into_bytes(),
        timeout,
        output_limit: 0,
    };
    let out = state.service.exec(auth.principal, auth.id, request).await?;
    Ok(Json(ExecResult {
        exit_code: out.exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: out.timed_out,
        truncated: out.truncated,
    }))
}

/// The terminal's credential: the bearer, or `?token=` for browsers; not both.
async fn terminal_principal(
    state: &AppState,
    raw_id: &str,
    bearer: Option<String>,
    token: Option<String>,
) -> Result<(WorkspaceId, Principal), ApiError> {
    let id = WorkspaceId::parse(raw_id)
        .map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    let credential = crate::events::stream_credential(bearer, token)?;
    let principal = match credential.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::Unauthorized("invalid workspace auth token")),
        Some(t) => workspace_principal(state, id, t).await?,
        None if state.config.dev => Principal::Dev,
        None => return Err(ApiError::Unauthorized("missing workspace auth token")),
    };
    Ok((id, principal))
}

/// The interactive shell.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/terminal",
    tag = "files",
    description = "WebSocket upgrade to an interactive shell with a TTY: `docker exec` on Docker (the image's user, in `/workspace`), a PTY on the process backend (the server's user on the host: off unless `--process-shell`). Without a subprotocol the reference's frames: every client frame is input, binary frames are output, Close 1000 when the shell ends. With `Sec-WebSocket-Protocol: berth.terminal.v1`: binary frames are bytes both ways, text frames are `TerminalControl` JSON (`resize` from the client; `exit` and `error` from the server). The session ends, and the shell with everything it started is killed, when the socket closes, after `--terminal-idle-timeout-secs` without input or output (counted from the start), or after `--terminal-max-session-secs`. Messages are at most 64 KiB; at most `--terminal-max-per-workspace` sessions (429). The credential may be `?token=` (browsers); the CORS origin rule applies. Opening and closing are recorded as `terminal` activity rows.",
    security(("admin" = []), ("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), TerminalQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 400, description = "`websocket upgrade required`, both a header and `?token=`, a size out of range.", body = ErrorBody),
        (status = 403, description = "The process backend without `--process-shell`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "An external workspace, or nothing running (with `status`).", body = ErrorBody),
        (status = 429, description = "As many sessions open as allowed.", body = ErrorBody),
        (status = 501, description = "A backend without a way in.", body = ErrorBody),
        (status = 502, description = "The backend failed.", body = ErrorBody),
    ),
)]
async fn terminal(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TerminalQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (id, principal) = terminal_principal(&state, &raw_id, bearer, q.token).await?;
    // A removed (or unknown) workspace is gone, upgrade or not, like every route of it.
    crate::auth::require_live(&state, id).await?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "websocket upgrade required"}),
        )
    })?;
    let size = TermSize {
        rows: q.rows.unwrap_or(24),
        cols: q.cols.unwrap_or(80),
    };
    if !(1..=TERM_MAX_CELLS).contains(&size.rows) || !(1..=TERM_MAX_CELLS).contains(&size.cols) {
        return Err(ApiError::BadRequest(format!(
            "rows and cols must be 1-{TERM_MAX_CELLS}"
        )));
    }
    // Opened before the upgrade, so every refusal is an HTTP answer, not a dropped socket.
    let session = state.service.open_terminal(principal, id, size).await?;
    let config = state.service.inside_config().clone();
    Ok(upgrade
        .protocols([TERMINAL_SUBPROTOCOL])
        .max_message_size(TERMINAL_MAX_MESSAGE)
        .max_frame_size(TERMINAL_MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let v1 = socket
                .protocol()
                .is_some_and(|p| p.as_bytes() == TERMINAL_SUBPROTOCOL.as_bytes());
            run_terminal(
                socket,
                session,
                v1,
                config.terminal_idle,
                config.terminal_max_session,
            )
            .await;
        }))
}

/// Bridges one socket and one shell until either ends or a timer fires, then kills the shell
/// (by dropping its input), tells a `berth.terminal.v1` client why, closes, and records the end.
async fn run_terminal(
    mut socket: WebSocket,
    mut session: TerminalSession,
    v1: bool,
    idle: Duration,
    max_session: Duration,
) {
    let Terminal {
        input,
        mut output,
        exit,
    } = session.take_terminal();
    let deadline = tokio::time::Instant::now() + max_session;
    let mut idle_at = tokio::time::Instant::now() + idle;
    let reason = loop {
        tokio::select! {
            msg = socket.recv() => {
                let data = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break "closed",
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(b))) => TerminalInput::Data(b.to_vec()),
                    Some(Ok(Message::Text(t))) if !v1 => TerminalInput::Data(t.as_bytes().to_vec()),
                    Some(Ok(Message::Text(t))) => match control(&t) {
                        Ok(resize) => resize,
                        Err(message) => {
                            let frame = TerminalControl::Error { message };
                            if socket.send(text(&frame)).await.is_err() {
                                break "closed";
                            }
                            continue;
                        }
                    },
                };
                idle_at = tokio::time::Instant::now() + idle;
                if input.send(data).await.is_err() {
                    break "exit";
                }
            }
            chunk = output.recv() => match chunk {
                Some(bytes) => {
                    idle_at = tokio::time::Instant::now() + idle;
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break "closed";
                    }
                }
                None => break "exit",
            },
            () = tokio::time::sleep_until(idle_at) => break "idle",
            () = tokio::time::sleep_until(deadline) => break "max_session",
        }
    };
    // Ends the session: the backend kills the shell and everything it started.
    drop(input);
    drop(output);
    let code = if reason == "exit" {
        tokio::time::timeout(Duration::from_secs(5), exit)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    } else {
        None
    };
    if reason != "closed" {
        if v1 {
            let frame = TerminalControl::Exit {
                code,
                reason: reason.to_owned(),
            };
            let _ = socket.send(text(&frame)).await;
        } else if reason != "exit" {
            let line = format!("\r\nSession ended ({reason}).\r\n");
            let _ = socket.send(Message::Binary(line.into_bytes().into())).await;
        }
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: Utf8Bytes::from(if reason == "exit" { "" } else { reason }),
            })))
            .await;
    }
    session.finish(reason, code).await;
}

fn text(control: &TerminalControl) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(control).unwrap_or_default(),
    ))
}

/// A client's control message; only `resize` is one a client sends.
fn control(text: &str) -> Result<TerminalInput, String> {
    match serde_json::from_str::<TerminalControl>(text) {
        Ok(TerminalControl::Resize { rows, cols })
            if (1..=TERM_MAX_CELLS).contains(&rows) && (1..=TERM_MAX_CELLS).contains(&cols) =>
        {
            Ok(TerminalInput::Resize(TermSize { rows, cols }))
        }
        Ok(TerminalControl::Resize { .. }) => {
            Err(format!("rows and cols must be 1-{TERM_MAX_CELLS}"))
        }
        Ok(_) => Err("only resize is a client control message".into()),
        Err(e) => Err(format!("invalid control message: {e}")),
    }
}

/// What the terminal would meet.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/terminal/diagnose",
    tag = "files",
    description = "The terminal's steps, run until the first that fails (REFERENCE-3.md §2.7's shape; berth's steps: `workspace`, `terminal-enabled`, `running`, `shell-probe`, the last an exec of `/bin/sh` bounded to 10 s). Always 200 for a workspace that exists.",
    security(("admin" = []), ("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The diagnosis.", body = TerminalDiagnosis),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
async fn diagnose(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
) -> Result<Json<TerminalDiagnosis>, ApiError> {
    let d = state.service.terminal_diagnose(auth.id).await?;
    Ok(Json(TerminalDiagnosis {
        workspace_id: d.workspace_id.to_string(),
        remote: false,
        ok: d.ok,
        first_failure: d.first_failure,
        steps: d
            .steps
            .into_iter()
            .map(|s| DiagnosisStep {
                name: s.name.to_owned(),
                ok: s.ok,
                duration_ms: s.duration_ms,
                error: s.error,
                detail: s.detail,
            })
            .collect(),
    }))
}

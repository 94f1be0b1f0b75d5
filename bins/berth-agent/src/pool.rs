//! The waiting side of a warm pool, protocol `berth.pool.v1` (`docs/warm-pool.md`).
//!
//! A pool member is started like any agent but without a workspace token, and with
//! `$WORKSPACE_CONFIG_PATH/.pool_secret` instead. It serves A2A plus two routes that only the
//! holder of that secret may call:
//!
//! - `GET /berth/pool`: `{"protocol":"berth.pool.v1","state":"waiting"|"claimed"}`, the
//!   platform's readiness probe of a member;
//! - `POST /berth/pool/claim`: the platform hands the member its workspace (files, name, env).
//!   The answer is 200 only once every file is written; the identity then goes to `run` (a
//!   oneshot), which registers and heartbeats exactly as a normally started agent does.
//!
//! Claims are serialized by one async mutex, which also holds the oneshot's sender: the first
//! claim to succeed takes it, every later one finds it gone and gets 409. The work of a claim runs
//! in a task of its own, so a platform that hangs up mid-claim cannot leave it half done.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, oneshot};

use crate::a2a::{SharedCard, agent_card};
use crate::config::{self, POOL_SECRET_FILE, PoolMember, PoolSecret, TOKEN_FILE, Token};

/// The protocol name every answer of the pool routes carries.
pub const PROTOCOL: &str = "berth.pool.v1";
/// The mode of a claimed file whose `mode` is absent.
const DEFAULT_MODE: u32 = 0o644;
/// The largest claim body read; a config dir is small (a template's manifest is at most 1 MiB).
const CLAIM_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// What a successful claim delivers to the code that then starts the registry loop.
pub struct Identity {
    /// The workspace token, read back from the written `.auth_token` (trimmed); `None` when the
    /// claim wrote none, and the agent then registers without one, as a normal start would.
    pub token: Option<Token>,
    /// The workspace's display name: the claim's `name`, else the `name:` of the written
    /// `config.yaml`, else the workspace id (the same fallbacks as a normal start).
    pub name: String,
    /// The workspace's environment (`env` of the claim). The reference agent runs no child
    /// process, so it only keeps these; a runtime that launches one passes them to it as its
    /// environment. The values are secrets: never log them.
    pub env: BTreeMap<String, String>,
}

/// A waiting pool member: the state behind the two pool routes.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    secret: PoolSecret,
    workspace_id: String,
    config_dir: PathBuf,
    /// The card served over A2A; a claim sets the workspace's name in it before answering.
    card: SharedCard,
    /// What `GET /berth/pool` reports; read without waiting for a claim in progress.
    claimed: AtomicBool,
    /// Serializes claims; `None` once a claim has succeeded.
    deliver: Mutex<Option<oneshot::Sender<Identity>>>,
}

impl Pool {
    /// A member waiting to be claimed as `workspace_id`, updating `card` when it is. The receiver
    /// yields the identity once a claim has succeeded.
    pub fn new(
        member: PoolMember,
        workspace_id: String,
        card: SharedCard,
    ) -> (Self, oneshot::Receiver<Identity>) {
        let (tx, rx) = oneshot::channel();
        let pool = Self(Arc::new(Inner {
            secret: member.secret,
            workspace_id,
            config_dir: member.config_dir,
            card,
            claimed: AtomicBool::new(false),
            deliver: Mutex::new(Some(tx)),
        }));
        (pool, rx)
    }

    /// The two pool routes, to merge into the A2A router (same listener).
    pub fn router(self) -> Router {
        Router::new()
            .route("/berth/pool", get(status))
            .route("/berth/pool/claim", post(claim))
            .with_state(self)
    }

    /// Checks the `Authorization: Bearer <pool secret>` header, comparing in constant time.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, value)| value.trim());
        let Some(presented) = presented else {
            return Err(Refusal::unauthorized("a pool secret bearer is required"));
        };
        // `ct_eq` on slices returns early only on a length difference; the secret's length is
        // not secret (the platform generates it at a fixed length).
        let expected = self.0.secret.expose().as_bytes();
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(Refusal::unauthorized("the pool secret does not match"))
        }
    }
}

/// The body of `POST /berth/pool/claim`. No `Debug`: it carries the token and the env's secrets.
#[derive(Deserialize)]
struct ClaimRequest {
    workspace_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    files: Vec<ClaimFile>,
    #[serde(default)]
    removed_files: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// One file of a claim, as sent.
#[derive(Deserialize)]
struct ClaimFile {
    path: String,
    content_b64: String,
    mode: Option<u32>,
}

/// A refused pool request: its status and `{"error": …}` body.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.to_owned(),
        }
    }

    fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn conflict(message: String) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message,
        }
    }

    fn internal(message: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

/// The body of every successful pool answer.
fn state_body(claimed: bool) -> Json<Value> {
    let state = if claimed { "claimed" } else { "waiting" };
    Json(json!({"protocol": PROTOCOL, "state": state}))
}

/// `GET /berth/pool`.
async fn status(State(pool): State<Pool>, headers: HeaderMap) -> Result<Json<Value>, Refusal> {
    pool.authorize(&headers)?;
    Ok(state_body(pool.0.claimed.load(Ordering::Acquire)))
}

/// `POST /berth/pool/claim`. The body is read only after the bearer checks out, so an
/// unauthenticated caller cannot make the member buffer anything.
#[tracing::instrument(skip_all, fields(workspace.id = %pool.0.workspace_id))]
async fn claim(
    State(pool): State<Pool>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Refusal> {
    pool.authorize(&headers)?;
    let too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > CLAIM_BODY_LIMIT);
    if too_large {
        return Err(Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("a claim body is at most {CLAIM_BODY_LIMIT} bytes"),
        });
    }
    let body = axum::body::to_bytes(body, CLAIM_BODY_LIMIT)
        .await
        .map_err(|e| Refusal::bad_request(format!("reading the claim body: {e}")))?;
    let request: ClaimRequest = serde_json::from_slice(&body).map_err(|e| {
        // serde's message can quote a value of the body (a secret in the wrong place), so only
        // the position and the kind of fault are reported.
        Refusal::bad_request(format!(
            "malformed claim body ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    // Its own task: once it holds the claim lock, a claim runs to its end even if the platform
    // hangs up, so a member is never left with its files written but unclaimed.
    tokio::spawn(apply_claim(pool, request))
        .await
        .map_err(|e| Refusal::internal(format!("the claim task failed: {e}")))?
}

/// Validates and carries out one claim, holding the claim lock throughout.
async fn apply_claim(pool: Pool, request: ClaimRequest) -> Result<Json<Value>, Refusal> {
    let inner = &pool.0;
    let mut deliver = inner.deliver.lock().await;
    if deliver.is_none() {
        return Err(Refusal::conflict(
            "this pool member has already been claimed".into(),
        ));
    }
    if !same_workspace(&request.workspace_id, &inner.workspace_id) {
        return Err(Refusal::conflict(format!(
            "this pool member is workspace {}, not {}",
            inner.workspace_id, request.workspace_id
        )));
    }
    let plan = Plan::new(&request.files, &request.removed_files).map_err(Refusal::bad_request)?;
    let (files, removed) = (plan.files.len(), plan.removals.len());

    let dir = inner.config_dir.clone();
    let need_manifest_name = request.name.trim().is_empty();
    let written = tokio::task::spawn_blocking(move || plan.apply(&dir, need_manifest_name))
        .await
        .map_err(|e| Refusal::internal(format!("the claim's file task failed: {e}")))?
        .map_err(|e| {
            // The text names paths and OS errors only, never a file's content.
            let message = format!("{e:#}");
            tracing::error!(error = %message, "claim failed");
            Refusal::internal(message)
        })?;

    let name = match request.name.trim() {
        "" => written
            .manifest_name
            .unwrap_or_else(|| inner.workspace_id.clone()),
        name => name.to_owned(),
    };
    inner.card.set(agent_card(&name));
    inner.claimed.store(true, Ordering::Release);
    tracing::info!(
        files,
        removed,
        env.vars = request.env.len(),
        token = written.token.is_some(),
        "claimed: workspace identity delivered"
    );
    let identity = Identity {
        token: written.token,
        name,
        env: request.env,
    };
    if let Some(tx) = deliver.take()
        && tx.send(identity).is_err()
    {
        // `run` has stopped waiting: the agent is shutting down.
        tracing::warn!("claimed while shutting down; the agent will not register");
    }
    Ok(state_body(true))
}

/// Whether the claimed id is this member's: the same string, or the same UUID in another case.
fn same_workspace(claimed: &str, ours: &str) -> bool {
    if claimed == ours {
        return true;
    }
    match (uuid::Uuid::parse_str(claimed), uuid::Uuid::parse_str(ours)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A claim's file work, validated in full before anything touches the disk.
struct Plan {
    removals: Vec<PathBuf>,
    files: Vec<PlannedFile>,
}

/// One file to write: its path relative to the config dir, its content and its mode.
struct PlannedFile {
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
}

/// What the file work of a claim read back.
struct Written {
    token: Option<Token>,
    /// The `name:` of the written `config.yaml`, when it was asked for.
    manifest_name: Option<String>,
}

impl Plan {
    /// Checks every path, decodes every content and checks every mode; the first fault is the
    /// 400's message.
    fn new(files: &[ClaimFile], removed_files: &[String]) -> Result<Self, String> {
        let removals = removed_files
            .iter()
            .map(|raw| relative_path(raw).map_err(|why| format!("removed_files: {why}")))
            .collect::<Result<_, _>>()?;
        let files = files
            .iter()
            .map(|file| {
                let path = relative_path(&file.path).map_err(|why| format!("files: {why}"))?;
                let content = STANDARD.decode(file.content_b64.trim()).map_err(|_| {
                    format!(
                        "files: the content_b64 of {:?} is not standard base64",
                        file.path
                    )
                })?;
                let mode = file.mode.unwrap_or(DEFAULT_MODE);
                if mode > 0o777 {
                    return Err(format!(
                        "files: the mode of {:?} is {mode:#o}; only permission bits (at most 0o777) are allowed",
                        file.path
                    ));
                }
                Ok(PlannedFile {
                    path,
                    content,
                    mode,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { removals, files })
    }

    /// Removes, then writes, then reads the token back and removes `.pool_secret`. Blocking.
    fn apply(self, dir: &Path, need_manifest_name: bool) -> anyhow::Result<Written> {
        for path in &self.removals {
            remove_all(&dir.join(path)).with_context(|| format!("removing {}", path.display()))?;
        }
        for file in &self.files {
            write_atomically(&dir.join(&file.path), &file.content, file.mode)
                .with_context(|| format!("writing {}", file.path.display()))?;
        }
        let token = config::read_token_file(&dir.join(TOKEN_FILE))?;
        let manifest_name = if need_manifest_name {
            fs::read_to_string(dir.join("config.yaml"))
                .ok()
                .and_then(|text| config::manifest_name(&text))
        } else {
            None
        };
        match fs::remove_file(dir.join(POOL_SECRET_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {POOL_SECRET_FILE}"));
            }
            _ => {}
        }
        Ok(Written {
            token,
            manifest_name,
        })
    }
}

/// A claimed path made safe to join to the config dir: relative, without `..`, naming something
/// below the dir (not the dir itself). `.` components are dropped.
fn relative_path(raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("an empty path".into());
    }
    if raw.starts_with('/') {
        return Err(format!("{raw:?} is absolute"));
    }
    if raw.contains('\0') {
        return Err(format!("{raw:?} contains a NUL byte"));
    }
    let mut path = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{raw:?} has a '..' component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{raw:?} is absolute"));
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err(format!("{raw:?} names the config dir itself"));
    }
    Ok(path)
}

/// Removes a file, a symlink (not what it points to) or a directory with everything under it;
/// nothing there is fine.
fn remove_all(path: &Path) -> std::io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes `content` to `path` with exactly `mode`: a temporary file in the same directory, then
/// a rename, so a reader sees the old file or the new one, never a part. No fsync: the member
/// and its files live and die together, and the claim is latency critical.
fn write_atomically(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{file_name}.claim-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        // Created owner-only, so a credential is never readable by others even for a moment;
        // the final mode is set explicitly, whatever the umask.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(content)?;
        file.set_permissions(Permissions::from_mode(mode))?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8], mode: Option<u32>) -> ClaimFile {
        ClaimFile {
            path: path.into(),
            content_b64: STANDARD.encode(content),
            mode,
        }
    }

    #[test]
    fn paths_must_stay_below_the_config_dir() {
        assert_eq!(relative_path("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(relative_path("./a//b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(
            relative_path(".auth_token").unwrap(),
            PathBuf::from(".auth_token")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            ".",
            "./",
            "a\0b",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_plan_refuses_bad_base64_and_modes() {
        let bad_b64 = ClaimFile {
            path: "a".into(),
            content_b64: "not base64!".into(),
            mode: None,
        };
        assert!(Plan::new(&[bad_b64], &[]).is_err());
        assert!(Plan::new(&[file("a", b"x", Some(0o4755))], &[]).is_err());
        assert!(Plan::new(&[], &["../up".into()]).is_err());
        let plan = Plan::new(&[file("a", b"x", None)], &[]).unwrap();
        assert_eq!(plan.files[0].mode, DEFAULT_MODE);
    }

    #[test]
    fn apply_removes_then_writes_with_modes_and_drops_the_pool_secret() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(POOL_SECRET_FILE), "s").unwrap();
        fs::create_dir_all(d.join("old/deep")).unwrap();
        fs::write(d.join("old/deep/f"), "x").unwrap();
        fs::write(d.join("stale.txt"), "x").unwrap();
        fs::write(d.join("config.yaml"), "old").unwrap();

        let plan = Plan::new(
            &[
                file("config.yaml", b"name: From Manifest\n", Some(0o640)),
                file("skills/a/SKILL.md", b"hi", None),
                file(".auth_token", b"tok-1\n", Some(0o600)),
            ],
            &["old".into(), "stale.txt".into(), "missing/x".into()],
        )
        .unwrap();
        let written = plan.apply(d, true).unwrap();

        assert_eq!(written.token, Some(Token::new("tok-1".into())));
        assert_eq!(written.manifest_name.as_deref(), Some("From Manifest"));
        assert!(!d.join("old").exists());
        assert!(!d.join("stale.txt").exists());
        assert!(!d.join(POOL_SECRET_FILE).exists());
        let mode = |p: &str| fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("config.yaml"), 0o640);
        assert_eq!(mode("skills/a/SKILL.md"), 0o644);
        assert_eq!(mode(".auth_token"), 0o600);
        assert_eq!(
            fs::read_to_string(d.join("skills/a/SKILL.md")).unwrap(),
            "hi"
        );
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".claim-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn workspace_ids_compare_as_uuids() {
        let id = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
        assert!(same_workspace(id, id));
        assert!(same_workspace(&id.to_uppercase(), id));
        assert!(!same_workspace("6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4c", id));
        assert!(!same_workspace("other", "ws-1"));
    }
}

//! The web console (issue #18): a single page served by the binary itself at `/` and
//! `/console`, its assets embedded (`crates/berth-http/console/`) and served under a content
//! hash (`/console/assets/<hash>/<file>`, cached for a year, immutable), and a sign-in that
//! trades a token for a session cookie.
//!
//! The session: `POST /console/session` with `{"token"}` (the admin token or a workspace token)
//! answers a cookie `berth_session` (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when the
//! console is reached over https, twelve hours) and a CSRF token. The token itself stays in the
//! server's memory, never in the browser's storage; a restart or `DELETE /console/session` ends
//! every or that session. A request that carries the cookie and no `Authorization` header is
//! handled as if it carried the session's token as its bearer ([`session_auth`]), so every route
//! and guard works unchanged and a workspace token signed in sees exactly what that token may;
//! a state-changing one (any method but GET, HEAD, OPTIONS) must also carry the session's CSRF
//! token in `X-CSRF-Token` (403 otherwise). WebSocket upgrades are GETs: the CORS rule (a
//! foreign `Origin` is refused before any route) and `SameSite=Strict` keep other sites out.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_api::ErrorBody;
use berth_api::console::{ConsoleSession, SignIn};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiPath, Body};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "berth_session";
/// The header a state-changing console request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a console session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once (the oldest is ended for a new one past it).
const MAX_SESSIONS: usize = 10_000;

/// Who a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    Workspace(berth_domain::WorkspaceId),
}

#[derive(Debug)]
struct Session {
    token: SecretString,
    who: Who,
    csrf: String,
    expires: Instant,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// The console's sessions, in memory (a restart ends them all), keyed by the SHA-256 of the
/// cookie's value, so a lookup's timing says nothing about a valid value.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes from the operating system, as 64 hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session for `token`; its cookie value and what the console is told.
    fn create(&self, token: SecretString, who: Who) -> (String, ConsoleSession) {
        let id = random_hex();
        let session = Session {
            token,
            who,
            csrf: random_hex(),
            expires: Instant::now() + SESSION_LIFETIME,
            expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(SESSION_LIFETIME).unwrap_or_default(),
        };
        let view = view(&session);
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(key(&id), session);
        (id, view)
    }

    /// The live session of a cookie value: its token, CSRF token and view.
    fn get(&self, id: &str) -> Option<(SecretString, String, ConsoleSession)> {
        let mut map = self.lock();
        let k = key(id);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => {
                Some((s.token.clone(), s.csrf.clone(), view(s)))
            }
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }
}

fn view(s: &Session) -> ConsoleSession {
    let (principal, workspace_id) = match s.who {
        Who::Admin => ("admin", None),
        Who::Workspace(id) => ("workspace", Some(id.to_string())),
    };
    ConsoleSession {
        principal: principal.into(),
        workspace_id,
        csrf: s.csrf.clone(),
        expires_at: s
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Middleware: a request with the session cookie and no `Authorization` header goes on with
/// the session's token as its bearer; a state-changing one needs the session's CSRF token.
pub(crate) async fn session_auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.headers().contains_key(AUTHORIZATION) {
        return next.run(req).await;
    }
    let Some(id) = cookie(req.headers(), SESSION_COOKIE).map(str::to_owned) else {
        return next.run(req).await;
    };
    let Some((token, csrf, _)) = state.admin.sessions.get(&id) else {
        // An ended session is no credential: the route answers as to anyone without one.
        return next.run(req).await;
    };
    let signing_in = req.method() == Method::POST && req.uri().path() == "/console/session";
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !signing_in {
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let ok: bool = Sha256::digest(&presented)
            .ct_eq(&Sha256::digest(csrf.as_bytes()))
            .into();
        if !ok {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "missing or invalid CSRF token"})),
            )
                .into_response();
        }
    }
    if !signing_in
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
    {
        let mut v = v;
        v.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    next.run(req).await
}

// ---- assets -----------------------------------------------------------------------------------

// `FILES`: every file of `console/`, embedded by `build.rs`.
include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The embedded files under one content hash, and the page that names it.
struct Assets {
    hash: String,
    index: String,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(bytes);
    }
    let hash: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let page = FILES
        .iter()
        .find(|(n, _)| *n == "index.html")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let index = page.replace("/console/assets/", &format!("/console/assets/{hash}/"));
    Assets { hash, index }
});

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn page() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        ASSETS.index.clone(),
    )
        .into_response()
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root_page))
        .routes(routes!(console_page))
        .routes(routes!(asset))
        .routes(routes!(session, sign_in, sign_out))
}

/// The console.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    description = "The web console's page (HTML; its scripts and styles under `/console/assets/<hash>/`). Sign in with the admin token or a workspace token.",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
)]
async fn root_page() -> Response {
    page()
}

/// The console, at its own path.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    description = "The same page as `/`.",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
)]
async fn console_page() -> Response {
    page()
}

/// One embedded file of the console.
#[utoipa::path(
    get,
    path = "/console/assets/{hash}/{file}",
    tag = "console",
    description = "A file of the console, under the content hash of the build that serves it: cached for a year (`immutable`). Another hash is a 404.",
    params(
        ("hash" = String, Path, description = "The content hash the page names."),
        ("file" = String, Path, description = "The file."),
    ),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "text/html"),
            (String = "image/svg+xml"),
            (Vec<u8> = "image/png"),
        )),
        (status = 404, description = "`not found`.", body = ErrorBody),
    ),
)]
async fn asset(ApiPath((hash, file)): ApiPath<(String, String)>) -> Result<Response, ApiError> {
    if hash != ASSETS.hash {
        return Err(ApiError::NotFound("not found"));
    }
    let (_, bytes) = FILES
        .iter()
        .find(|(n, _)| *n == file)
        .ok_or(ApiError::NotFound("not found"))?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type(&file))),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        *bytes,
    )
        .into_response())
}

/// Who the console is signed in as.
#[utoipa::path(
    get,
    path = "/console/session",
    tag = "console",
    description = "The console session of the `berth_session` cookie: who it is, its CSRF token (send it as `X-CSRF-Token` with every state-changing request) and when it ends.",
    responses(
        (status = 200, description = "Signed in.", body = ConsoleSession),
        (status = 401, description = "`not signed in`.", body = ErrorBody),
    ),
)]
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let found = cookie(&headers, SESSION_COOKIE).and_then(|id| state.admin.sessions.get(id));
    match found {
        Some((_, _, view)) => Ok(no_store(Json(view).into_response())),
        None => Err(ApiError::Unauthorized("not signed in")),
    }
}

/// Signs the console in.
#[utoipa::path(
    post,
    path = "/console/session",
    tag = "console",
    description = "Trades the admin token or a workspace token for a session cookie (`berth_session`: `HttpOnly`, `SameSite=Strict`, `Secure` over https, 12 hours); the token stays on the server. A workspace token's session sees what that token may.",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the cookie is set.", body = ConsoleSession,
            headers(("Set-Cookie" = String, description = "The session cookie."))),
        (status = 400, description = "`invalid request body`.", body = ErrorBody),
        (status = 401, description = "`invalid token`.", body = ErrorBody),
    ),
)]
async fn sign_in(
    State(state): State<AppState>,
    PlatformUrl(url): PlatformUrl,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let s: SignIn = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("invalid request body".into()))?;
    let token = s.token.trim();
    let who = if token.is_empty() {
        return Err(ApiError::Unauthorized("invalid token"));
    } else if state.admin.is_admin_token(token) {
        Who::Admin
    } else {
        match state.service.authenticate_token(token).await {
            Ok(Some(id)) => Who::Workspace(id),
            Ok(None) => return Err(ApiError::Unauthorized("invalid token")),
            Err(e) => return Err(ApiError::internal("auth check failed", e)),
        }
    };
    let (id, view) = state
        .admin
        .sessions
        .create(SecretString::from(token.to_owned()), who);
    let secure = if url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    let mut resp = no_store(Json(view).into_response());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}

/// Signs the console out.
#[utoipa::path(
    delete,
    path = "/console/session",
    tag = "console",
    description = "Ends the cookie's session (with `X-CSRF-Token`) and clears the cookie.",
    responses(
        (status = 200, description = "`signed_out`.", body = berth_api::StatusResponse),
        (status = 403, description = "`missing or invalid CSRF token`.", body = ErrorBody),
    ),
)]
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.admin.sessions.remove(id);
    }
    let mut resp = no_store(Json(berth_api::StatusResponse::new("signed_out")).into_response());
    resp.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("berth_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

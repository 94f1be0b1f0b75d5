//! The remote control-plane provisioner: each workspace is a machine that a control plane (CP)
//! starts over HTTP (REFERENCE.md §5.2).
//!
//! | Call    | Request                                                        | Success                 |
//! |---------|----------------------------------------------------------------|-------------------------|
//! | start   | `POST {base}/cp/workspaces/provision` (JSON body, below)       | 201 `{instance_id, …}`  |
//! | stop    | `DELETE {base}/cp/workspaces/{id}?instance_id=…`               | any 2xx                 |
//! | status  | `GET {base}/cp/workspaces/{id}/status?instance_id=…`           | `{state}`               |
//! | console | `GET {base}/cp/admin/workspaces/{id}/console`                  | `{output}`              |
//!
//! Differences from the reference, on purpose:
//!
//! - The platform's admin token is never put into the agent's environment; the tenant identity
//!   token travels only in the `X-Molecule-Admin-Token` header, to the control plane itself.
//! - The config-file bundle cap (12 KiB in the reference) is configurable (§12.11 #75).
//! - The `instance_id` query parameter is URL-escaped (§12.11 #75).
//! - Redirects are not followed, so neither credential header can be carried to another host.
//!
//! The control plane must be reached over plain HTTP (a TLS-terminating proxy on loopback in front
//! of a remote one): berth's `reqwest` is built without a TLS backend, because enabling one
//! without cmake means `rustls-no-provider`, which makes every other `reqwest::Client` in the
//! workspace panic unless a crypto provider is installed first.
//!
//! The control plane, not berth, knows which machine runs a workspace; the server keeps that
//! instance id in its database. The trait's [`Provisioner::stop`] and
//! [`Provisioner::is_running`] use the ids this provisioner saw itself (from `start`, or handed
//! to [`ControlPlaneProvisioner::track`]); [`ControlPlaneProvisioner::stop_instance`] and
//! [`ControlPlaneProvisioner::status`] take the id explicitly and work across server restarts.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_domain::WorkspaceId;
use berth_domain::compute::Compute;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{BackendKind, Error, ProvisionRequest, Provisioner, Started};

/// Prepared-env keys that carry SCM write tokens; they never reach a control-plane machine.
const SCM_TOKEN_VARS: [&str; 6] = [
    "GITEA_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITLAB_TOKEN",
    "GL_TOKEN",
    "BITBUCKET_TOKEN",
];

/// The header that carries the tenant identity token.
const TENANT_TOKEN_HEADER: &str = "x-molecule-admin-token";

/// How much of a provision or status answer is read.
const ANSWER_CAP: usize = 64 * 1024;
/// How much of a failed stop's answer is quoted in the error.
const STOP_BODY_CAP: usize = 512;
/// How much console output is handed out.
const CONSOLE_CAP: usize = 256 * 1024;
/// How much of a console answer is read: room for the output escaped as a JSON string.
const CONSOLE_ANSWER_CAP: usize = 4 * CONSOLE_CAP;
/// How much of the control plane's `error` text is quoted.
const ERROR_TEXT_CAP: usize = 512;

/// Settings of the control-plane provisioner (REFERENCE.md §5.2).
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The control plane's base URL (`https://…`, optionally with a path prefix; `http://` only
    /// with [`ControlPlaneConfig::allow_plain_http`]).
    pub base_url: String,
    /// The organisation the machines belong to (`MOLECULE_ORG_ID`).
    pub org_id: String,
    /// Bearer token of the provision routes.
    pub shared_secret: Option<SecretString>,
    /// Tenant identity token, sent as `X-Molecule-Admin-Token` on every call. A secret of its
    /// own: berth's admin token is not sent anywhere.
    pub tenant_token: Option<SecretString>,
    /// Bearer token of the admin routes; the shared secret when unset.
    pub admin_api_key: Option<SecretString>,
    /// Deadline of each HTTP call, answer included.
    pub timeout: Duration,
    /// How many times a stop is tried in all before it is given up (1 when 0).
    pub stop_retries: u32,
    /// Pause after the first failed stop attempt; it doubles after each further one.
    pub stop_backoff: Duration,
    /// Largest total size in bytes of the config files shipped with a start.
    pub config_files_cap: usize,
    /// Accept a plain `http://` base URL (credentials and secrets then cross the network in the
    /// clear): for development against a local control plane only. Off by default.
    pub allow_plain_http: bool,
    /// PEM certificates trusted as roots besides the system's (a private CA of the control
    /// plane). The server's certificate is always verified.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl ControlPlaneConfig {
    /// Default for [`ControlPlaneConfig::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default for [`ControlPlaneConfig::stop_retries`].
    pub const DEFAULT_STOP_RETRIES: u32 = 3;
    /// Default for [`ControlPlaneConfig::stop_backoff`] (so pauses of 1 s, then 2 s).
    pub const DEFAULT_STOP_BACKOFF: Duration = Duration::from_secs(1);
    /// Default for [`ControlPlaneConfig::config_files_cap`]: the reference's 12 KiB.
    pub const DEFAULT_CONFIG_FILES_CAP: usize = 12 * 1024;

    /// A configuration for `base_url` and `org_id` with no credentials and the defaults.
    pub fn new(base_url: impl Into<String>, org_id: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            org_id: org_id.into(),
            shared_secret: None,
            tenant_token: None,
            admin_api_key: None,
            timeout: Self::DEFAULT_TIMEOUT,
            stop_retries: Self::DEFAULT_STOP_RETRIES,
            stop_backoff: Self::DEFAULT_STOP_BACKOFF,
            config_files_cap: Self::DEFAULT_CONFIG_FILES_CAP,
            allow_plain_http: false,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// Starts each workspace as a machine of a remote control plane (see the module docs).
#[derive(Debug)]
pub struct ControlPlaneProvisioner {
    config: ControlPlaneConfig,
    /// `base_url` without a trailing slash.
    base: String,
    client: Client,
    /// Provision-route headers, and admin-route headers.
    provision_headers: HeaderMap,
    admin_headers: HeaderMap,
    /// Instance ids of the workspaces this provisioner started or was told about.
    instances: Mutex<HashMap<WorkspaceId, String>>,
}

/// Which credentials a call carries.
#[derive(Debug, Clone, Copy)]
enum Route {
    Provision,
    Admin,
}

impl ControlPlaneProvisioner {
    /// A provisioner with `config`. Fails when the base URL is not an `https://` URL (or an
    /// `http://` one without [`ControlPlaneConfig::allow_plain_http`]), the org id is empty, a
    /// credential cannot be sent as a header, or an extra root certificate is not PEM.
    pub fn new(config: ControlPlaneConfig) -> Result<Self, Error> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base)
            .map_err(|e| Error::Backend(format!("control plane URL {base:?}: {e}")))?;
        let scheme_ok = match parsed.scheme() {
            "https" => true,
            "http" => config.allow_plain_http,
            _ => false,
        };
        if !scheme_ok || parsed.host().is_none() {
            return Err(Error::Backend(format!(
                "control plane URL {base:?} must be https://host[:port][/prefix] (plain http:// \
                 sends the provisioning secrets in the clear; it is accepted only when allowed \
                 for development)"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::Backend(format!(
                "control plane URL {base:?} must not have a query or fragment"
            )));
        }
        if config.org_id.trim().is_empty() {
            return Err(Error::Backend("control plane org id is empty".into()));
        }

        let tenant = header_value("tenant token", config.tenant_token.as_ref(), "")?;
        let with = |bearer: Option<HeaderValue>| {
            let mut headers = HeaderMap::new();
            if let Some(bearer) = bearer {
                headers.insert(AUTHORIZATION, bearer);
            }
            if let Some(tenant) = &tenant {
                headers.insert(TENANT_TOKEN_HEADER, tenant.clone());
            }
            headers
        };
        let provision_headers = with(header_value(
            "shared secret",
            config.shared_secret.as_ref(),
            "Bearer ",
        )?);
        let admin_key = non_empty(config.admin_api_key.as_ref())
            .or_else(|| non_empty(config.shared_secret.as_ref()));
        let admin_headers = with(header_value("admin API key", admin_key, "Bearer ")?);

        let mut builder = crate::client_builder_for(&base)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!config.allow_plain_http);
        for pem in &config.extra_root_certificates {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let bad =
                |why: String| Error::Backend(format!("control plane root certificate: {why}"));
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for der in certs {
                let cert = reqwest::Certificate::from_der(&der).map_err(|e| bad(chain(&e)))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Backend(format!("building the HTTP client: {}", chain(&e))))?;

        Ok(Self {
            config,
            base,
            client,
            provision_headers,
            admin_headers,
            instances: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ControlPlaneConfig {
        &self.config
    }

    /// Records that `instance_id` runs workspace `id` (e.g. from the database at server start), so
    /// the trait's `stop` and `is_running` reach it. An empty id forgets the workspace.
    pub fn track(&self, id: WorkspaceId, instance_id: &str) {
        let mut instances = self.lock();
        if instance_id.is_empty() {
            instances.remove(&id);
        } else {
            instances.insert(id, instance_id.to_owned());
        }
    }

    /// Stops the machine `instance_id` of workspace `id`: `DELETE
    /// {base}/cp/workspaces/{id}?instance_id=…`, tried up to `stop_retries` times with doubling
    /// pauses. An empty instance id has nothing to stop. Giving up is logged as `LEAK-SUSPECT`
    /// (the machine may still run and cost money) and returned as the last error.
    #[tracing::instrument(skip_all, fields(workspace.id = %id, instance.id = %instance_id))]
    pub async fn stop_instance(&self, id: WorkspaceId, instance_id: &str) -> Result<(), Error> {
        if instance_id.is_empty() {
            return Ok(());
        }
        let url = self.url(&format!("/cp/workspaces/{id}"), Some(instance_id))?;
        let attempts = self.config.stop_retries.max(1);
        let mut pause = self.config.stop_backoff;
        let mut attempt = 1;
        loop {
            match self.delete_once(url.clone()).await {
                Ok(()) => {
                    let mut instances = self.lock();
                    if instances.get(&id).is_some_and(|known| known == instance_id) {
                        instances.remove(&id);
                    }
                    tracing::info!(attempt, "control-plane instance stopped");
                    return Ok(());
                }
                Err(e) if attempt < attempts => {
                    tracing::warn!(attempt, error = %e, "control-plane stop failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(
                        attempts,
                        last_err = %e,
                        "LEAK-SUSPECT control-plane stop gave up; the instance may still run"
                    );
                    return Err(e);
                }
            }
        }
    }

    /// Whether the machine `instance_id` of workspace `id` runs: `GET
    /// {base}/cp/workspaces/{id}/status?instance_id=…`, running iff its `state` is `running`.
    /// An empty instance id is not running; any failure to find out is an error.
    #[tracing::instrument(skip_all, fields(workspace.id = %id, instance.id = %instance_id))]
    pub async fn status(&self, id: WorkspaceId, instance_id: &str) -> Result<bool, Error> {
        #[derive(Deserialize)]
        struct StatusAnswer {
            #[serde(default)]
            state: String,
        }

        if instance_id.is_empty() {
            return Ok(false);
        }
        let url = self.url(&format!("/cp/workspaces/{id}/status"), Some(instance_id))?;
        let response = self.send(Method::GET, url, Route::Provision, None).await?;
        let status = response.status();
        let (body, _) = read_capped(response, ANSWER_CAP).await?;
        if !status.is_success() {
            return Err(Error::Backend(format!(
                "control plane status answered {status}{}",
                error_field(&body).map_or_else(String::new, |e| format!(": {e}"))
            )));
        }
        let answer: StatusAnswer = serde_json::from_slice(&body).map_err(|e| {
            Error::Backend(format!("control plane status answer is not valid: {e}"))
        })?;
        Ok(answer.state == "running")
    }

    /// The machine console of workspace `id` (boot log and the like), from the admin route `GET
    /// {base}/cp/admin/workspaces/{id}/console`; at most its last 256 KiB.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn console(&self, id: WorkspaceId) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct ConsoleAnswer {
            #[serde(default)]
            output: String,
        }

        let url = self.url(&format!("/cp/admin/workspaces/{id}/console"), None)?;
        let response = self.send(Method::GET, url, Route::Admin, None).await?;
        let status = response.status();
        let (body, truncated) = read_capped(response, CONSOLE_ANSWER_CAP).await?;
        if !status.is_success() {
            return Err(Error::Backend(format!(
                "control plane console answered {status}{}",
                error_field(&body).map_or_else(String::new, |e| format!(": {e}"))
            )));
        }
        if truncated {
            return Err(Error::Backend(format!(
                "control plane console answer is larger than {CONSOLE_ANSWER_CAP} bytes"
            )));
        }
        let answer: ConsoleAnswer = serde_json::from_slice(&body).map_err(|e| {
            Error::Backend(format!("control plane console answer is not valid: {e}"))
        })?;
        Ok(tail(answer.output, CONSOLE_CAP))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkspaceId, String>> {
        // Every operation on the map is a single get, insert or remove, so a poisoned lock still
        // guards a consistent map.
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `{base}{path}`, with `instance_id` as an escaped query parameter when given.
    fn url(&self, path: &str, instance_id: Option<&str>) -> Result<Url, Error> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| Error::Backend(format!("control plane URL for {path}: {e}")))?;
        if let Some(instance_id) = instance_id {
            url.query_pairs_mut()
                .append_pair("instance_id", instance_id);
        }
        Ok(url)
    }

    /// Sends one request with the route's credentials.
    async fn send(
        &self,
        method: Method,
        url: Url,
        route: Route,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Error> {
        let headers = match route {
            Route::Provision => &self.provision_headers,
            Route::Admin => &self.admin_headers,
        };
        let mut request = self.client.request(method, url).headers(headers.clone());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request.send().await.map_err(transport)
    }

    /// One stop attempt.
    async fn delete_once(&self, url: Url) -> Result<(), Error> {
        let response = self
            .send(Method::DELETE, url, Route::Provision, None)
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let (body, _) = read_capped(response, STOP_BODY_CAP).await?;
        let body = String::from_utf8_lossy(&body);
        Err(Error::Backend(format!(
            "control plane stop answered {status}: {}",
            body.trim()
        )))
    }
}

#[async_trait]
impl Provisioner for ControlPlaneProvisioner {
    fn kind(&self) -> BackendKind {
        BackendKind::ControlPlane
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %request.workspace_id, runtime = %request.runtime))]
    async fn start(&self, request: ProvisionRequest) -> Result<Started, Error> {
        #[derive(Deserialize)]
        struct ProvisionAnswer {
            #[serde(default)]
            instance_id: String,
            #[serde(default)]
            private_ip: String,
            #[serde(default)]
            state: String,
            #[serde(default)]
            error: String,
        }

        let id = request.workspace_id;
        let cap = self.config.config_files_cap;
        let org_id = self.config.org_id.clone();
        let body = tokio::task::spawn_blocking(move || provision_body(&org_id, &request, cap))
            .await
            .map_err(|e| Error::Backend(format!("preparing the provision request: {e}")))??;

        // A restart replaces the machine: one workspace never runs on two. A failure here has
        // been logged as LEAK-SUSPECT and must not keep the workspace from starting again.
        let previous = self.lock().get(&id).cloned();
        if let Some(previous) = previous {
            let _ = self.stop_instance(id, &previous).await;
        }

        let url = self.url("/cp/workspaces/provision", None)?;
        let response = self
            .send(Method::POST, url, Route::Provision, Some(body))
            .await?;
        let status = response.status();
        let (answer, _) = read_capped(response, ANSWER_CAP).await?;
        if status != StatusCode::CREATED {
            let reason = error_field(&answer).map_or_else(String::new, |e| format!(": {e}"));
            let message = format!("control plane provision answered {status}{reason}");
            return Err(if status.is_server_error() {
                Error::Backend(message)
            } else {
                Error::StartFailed(message)
            });
        }
        let answer: ProvisionAnswer = serde_json::from_slice(&answer).map_err(|e| {
            Error::Backend(format!("control plane provision answer is not valid: {e}"))
        })?;

        tracing::info!(
            instance.id = %answer.instance_id,
            state = %answer.state,
            "control-plane instance provisioned"
        );
        if !answer.error.is_empty() {
            tracing::warn!(error = %head(&answer.error, ERROR_TEXT_CAP), "control plane reported an error with the instance");
        }
        self.track(id, &answer.instance_id);
        Ok(Started {
            url: (!answer.private_ip.is_empty())
                .then(|| format!("http://{}:8000", answer.private_ip)),
            instance_id: (!answer.instance_id.is_empty()).then_some(answer.instance_id),
        })
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), Error> {
        let known = self.lock().get(&id).cloned();
        match known {
            Some(instance_id) => self.stop_instance(id, &instance_id).await,
            None => Ok(()),
        }
    }

    async fn is_running(&self, id: WorkspaceId) -> Result<bool, Error> {
        let known = self.lock().get(&id).cloned();
        match known {
            Some(instance_id) => self.status(id, &instance_id).await,
            None => Ok(false),
        }
    }

    async fn console(&self, id: WorkspaceId) -> Result<Option<String>, Error> {
        // The inherent method: the control plane's admin console route.
        ControlPlaneProvisioner::console(self, id).await.map(Some)
    }
}

/// The JSON body of `POST /cp/workspaces/provision` (REFERENCE.md §5.2).
#[derive(Serialize)]
struct ProvisionBody<'a> {
    org_id: &'a str,
    workspace_id: String,
    runtime: &'a str,
    tier: u8,
    #[serde(skip_serializing_if = "str::is_empty")]
    instance_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    disk_gb: i64,
    display: DisplayBody<'a>,
    platform_url: &'a str,
    env: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    config_files: BTreeMap<String, String>,
}

/// The `display` object of the provision body: always present, empty fields left out.
#[derive(Serialize)]
struct DisplayBody<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    mode: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    width: i64,
    #[serde(skip_serializing_if = "is_zero")]
    height: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    protocol: &'a str,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Serialises the provision body of `request`; it carries secrets, so it is never logged.
fn provision_body(org_id: &str, request: &ProvisionRequest, cap: usize) -> Result<Vec<u8>, Error> {
    let compute: Compute = serde_json::from_value(request.compute.clone())
        .map_err(|e| Error::StartFailed(format!("invalid compute config: {e}")))?;
    let files = config_files(request, cap)?;
    let mut env = BTreeMap::new();
    for (key, value) in &request.env {
        if !SCM_TOKEN_VARS.contains(&key.as_str()) {
            // A later pair replaces an earlier one, as in a container's ordered env list.
            env.insert(key.as_str(), value.expose_secret());
        }
    }
    let body = ProvisionBody {
        org_id,
        workspace_id: request.workspace_id.to_string(),
        runtime: &request.runtime,
        tier: request.tier,
        instance_type: &compute.instance_type,
        disk_gb: compute.volume.root_gb,
        display: DisplayBody {
            mode: &compute.display.mode,
            width: compute.display.width,
            height: compute.display.height,
            protocol: &compute.display.protocol,
        },
        platform_url: &request.platform_url,
        env,
        config_files: files
            .iter()
            .map(|(name, content)| (name.clone(), BASE64.encode(content)))
            .collect(),
    };
    serde_json::to_vec(&body)
        .map_err(|e| Error::Backend(format!("encoding the provision request: {e}")))
}

/// The config files to ship, path → content: from the template directory only a regular
/// `config.yaml` and the regular files under `prompts/` (never through a symlink), then the
/// request's config files and secret files, which replace template files of the same path. Fails
/// when they add up to more than `cap` bytes.
fn config_files(
    request: &ProvisionRequest,
    cap: usize,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut template = Vec::new();
    if let Some(root) = &request.template_path {
        template_files(root, &mut template)?;
    }

    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for (name, _, len) in &template {
        sizes.insert(name.clone(), *len);
    }
    let mut inline: Vec<(String, &[u8])> = Vec::new();
    for (name, content) in &request.config_files {
        inline.push((relative(name)?, content));
    }
    for (name, secret) in &request.secret_files {
        inline.push((relative(name)?, secret.expose_secret().as_bytes()));
    }
    for (name, content) in &inline {
        sizes.insert(name.clone(), content.len() as u64);
    }
    // Sized before anything is read, so an oversized prompt is refused without loading it.
    check_cap(sizes.values().sum(), cap)?;

    let mut files = BTreeMap::new();
    for (name, path, _) in template {
        let content = fs::read(&path).map_err(|e| {
            Error::Backend(format!("reading template file {}: {e}", path.display()))
        })?;
        files.insert(name, content);
    }
    for (name, content) in inline {
        files.insert(name, content.to_vec());
    }
    // The template may have grown between sizing and reading.
    check_cap(files.values().map(|c| c.len() as u64).sum(), cap)?;
    Ok(files)
}

fn check_cap(total: u64, cap: usize) -> Result<(), Error> {
    if total > cap as u64 {
        return Err(Error::StartFailed(format!(
            "config files total {total} bytes, over the control plane's limit of {cap} bytes"
        )));
    }
    Ok(())
}

/// Collects `(relative name, path, size)` of the template files the control plane gets.
fn template_files(root: &Path, out: &mut Vec<(String, PathBuf, u64)>) -> Result<(), Error> {
    let io = |path: &Path, e: std::io::Error| {
        Error::Backend(format!("reading template {}: {e}", path.display()))
    };
    let meta = fs::symlink_metadata(root).map_err(|e| io(root, e))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(Error::StartFailed(format!(
            "template {} is not a directory (a symlinked template is refused)",
            root.display()
        )));
    }

    let config = root.join("config.yaml");
    match fs::symlink_metadata(&config) {
        Ok(meta) if meta.file_type().is_file() => {
            out.push(("config.yaml".into(), config, meta.len()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&config, e)),
    }

    let prompts = root.join("prompts");
    match fs::symlink_metadata(&prompts) {
        Ok(meta) if meta.is_dir() => walk(&prompts, "prompts", out).map_err(|e| io(&prompts, e)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&prompts, e)),
    }
}

/// Adds the regular files below `dir` (named `prefix/…`), skipping symlinks and special files.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf, u64)>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}/{n}")) else {
            // A name that is not UTF-8 cannot be a JSON key; such a file is left out.
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), &name, out)?;
        } else if kind.is_file() {
            out.push((name, entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// `name` as a plain relative path (`a/b.md`), or an error when it is empty, absolute or climbs
/// out with `..`.
fn relative(name: &str) -> Result<String, Error> {
    let escapes = || {
        Error::StartFailed(format!(
            "config file path {name:?} escapes the configs directory"
        ))
    };
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy()),
            Component::CurDir => {}
            _ => return Err(escapes()),
        }
    }
    if parts.is_empty() {
        return Err(escapes());
    }
    Ok(parts.join("/"))
}

fn non_empty(secret: Option<&SecretString>) -> Option<&SecretString> {
    secret.filter(|s| !s.expose_secret().is_empty())
}

/// `prefix + secret` as a sensitive header value; `None` when the secret is unset or empty.
fn header_value(
    what: &str,
    secret: Option<&SecretString>,
    prefix: &str,
) -> Result<Option<HeaderValue>, Error> {
    let Some(secret) = non_empty(secret) else {
        return Ok(None);
    };
    let mut value = HeaderValue::from_str(&format!("{prefix}{}", secret.expose_secret()))
        .map_err(|_| Error::Backend(format!("control plane {what} is not a valid header value")))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Reads at most `cap` bytes of the answer; the flag says whether there was more.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The `error` field of a JSON answer, shortened; never the raw body, which may echo anything.
fn error_field(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ErrorAnswer {
        error: Option<String>,
    }
    let error = serde_json::from_slice::<ErrorAnswer>(body).ok()?.error?;
    let error = error.trim();
    if error.is_empty() {
        return None;
    }
    Some(head(error, ERROR_TEXT_CAP).to_owned())
}

/// The first `cap` bytes of `text`, cut at a character boundary.
fn head(text: &str, cap: usize) -> &str {
    let mut end = text.len().min(cap);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The last `cap` bytes of `text`, cut at a character boundary.
fn tail(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let mut start = text.len() - cap;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// A transport failure: a timeout, or the control plane could not be reached or read.
fn transport(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout
    } else {
        Error::Backend(format!("control plane unreachable: {}", chain(&e)))
    }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_normalises_and_refuses_escaping_paths() {
        assert_eq!(relative("config.yaml").unwrap(), "config.yaml");
        assert_eq!(relative("./prompts//a.md").unwrap(), "prompts/a.md");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a/.."] {
            assert_eq!(relative(bad).unwrap_err().code(), "START_FAILED", "{bad}");
        }
    }

    #[test]
    fn error_field_takes_only_the_error_text() {
        assert_eq!(
            error_field(br#"{"error":" quota ","detail":"x"}"#).as_deref(),
            Some("quota")
        );
        assert_eq!(error_field(b"<html>boom</html>"), None);
        assert_eq!(error_field(br#"{"error":""}"#), None);
        let long = format!(r#"{{"error":"{}"}}"#, "é".repeat(400));
        assert!(error_field(long.as_bytes()).unwrap().len() <= ERROR_TEXT_CAP);
    }

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        assert_eq!(tail("abc".into(), 5), "abc");
        assert_eq!(tail("abcdef".into(), 2), "ef");
        assert_eq!(tail("aé".into(), 1), "");
    }

    /// A development configuration: plain `http://` allowed.
    fn plain(url: &str, org: &str) -> ControlPlaneConfig {
        ControlPlaneConfig {
            allow_plain_http: true,
            ..ControlPlaneConfig::new(url, org)
        }
    }

    #[test]
    fn new_refuses_unusable_settings() {
        for url in ["ftp://cp", "not a url", "http://cp/?a=b", "https://cp/#x"] {
            let err = ControlPlaneProvisioner::new(plain(url, "org")).unwrap_err();
            assert_eq!(err.code(), "BACKEND_ERROR", "{url}");
        }
        // Plain http:// only when allowed; https:// always.
        let err =
            ControlPlaneProvisioner::new(ControlPlaneConfig::new("http://cp", "org")).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(ControlPlaneProvisioner::new(plain("http://cp", "org")).is_ok());
        assert!(
            ControlPlaneProvisioner::new(ControlPlaneConfig::new("https://cp.example", "org"))
                .is_ok()
        );
        let mut bad_root = ControlPlaneConfig::new("https://cp.example", "org");
        bad_root.extra_root_certificates = vec![b"not a certificate".to_vec()];
        assert!(ControlPlaneProvisioner::new(bad_root).is_err());
        let err = ControlPlaneProvisioner::new(plain("http://cp", " ")).unwrap_err();
        assert_eq!(err.code(), "BACKEND_ERROR");
        let mut config = plain("http://cp/prefix/", "org");
        config.shared_secret = Some(SecretString::from("bad\nsecret".to_owned()));
        assert!(ControlPlaneProvisioner::new(config).is_err());
    }
}

//! The Docker provisioner against the real Docker daemon of the machine, with the image
//! `berth-agent:test` built locally by `cargo xtask image` (no registry is reachable).
//!
//! Each test works in a [`Sandbox`]: a Docker network `berth-test-<uuid>` of its own, and the
//! workspaces it provisions there; dropping the sandbox removes every container, volume and the
//! network, whether the test passed or not. Agents reach the test's fake platform
//! ([`FakeRegistry`]) on the network's gateway address, or on 127.0.0.1 with host networking;
//! nothing else is contacted.

mod failures;
mod inside;
mod lifecycle;
mod tiers;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use berth_domain::WorkspaceId;
use berth_provision::docker::{LABEL_WORKSPACE_ID, container_name};
use berth_provision::{DockerConfig, DockerProvisioner, ProvisionRequest};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, NetworkCreateRequest};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use futures_util::TryStreamExt;
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The image `cargo xtask image` builds.
const IMAGE: &str = "berth-agent:test";
/// The runtime name the tests map to [`IMAGE`].
const RUNTIME: &str = "berth-agent";
/// Upper bound for anything a container is expected to do "soon"; generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
const MIB: i64 = 1024 * 1024;

/// A client of the local daemon for the tests' own checks; panics with instructions without one.
async fn docker() -> Docker {
    let connect = async {
        let docker = Docker::connect_with_unix(
            DockerConfig::DEFAULT_SOCKET,
            120,
            bollard::API_DEFAULT_VERSION,
        )?;
        docker.negotiate_version().await
    };
    let docker = connect.await.unwrap_or_else(|e| {
        panic!(
            "no Docker Engine answers at {} ({e}). These tests need a running Docker daemon this \
             user may use: start it (e.g. `sudo systemctl start docker`) and run `cargo xtask \
             test`, which checks for it and builds the test image first",
            DockerConfig::DEFAULT_SOCKET
        )
    });
    if docker.inspect_image(IMAGE).await.is_err() {
        panic!(
            "the test image {IMAGE} is missing: run `cargo xtask image` (or `cargo xtask test`)"
        );
    }
    docker
}

/// A Docker network of the test's own plus everything provisioned in it; dropping it removes all.
struct Sandbox {
    docker: Docker,
    network: String,
    gateway: IpAddr,
    ids: Mutex<Vec<WorkspaceId>>,
}

impl Sandbox {
    async fn new() -> Self {
        let docker = docker().await;
        let network = format!("berth-test-{}", WorkspaceId::new_v4());
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(HashMap::from([("berth.test".into(), "true".into())])),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating network {network}: {e}"));
        // Built before anything can fail, so the network is removed whatever happens next.
        let mut sandbox = Self {
            docker,
            network,
            gateway: IpAddr::from([127, 0, 0, 1]),
            ids: Mutex::new(Vec::new()),
        };
        let info = sandbox
            .docker
            .inspect_network(&sandbox.network, None)
            .await
            .expect("inspecting the test network");
        sandbox.gateway = info
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.gateway.as_deref()?.parse().ok())
            .find(IpAddr::is_ipv4)
            .expect("the test network has an IPv4 gateway");
        sandbox
    }

    /// A provisioner on this sandbox's network, with [`RUNTIME`] mapped to [`IMAGE`].
    async fn provisioner(&self) -> DockerProvisioner {
        self.provisioner_with(|_| {}).await
    }

    async fn provisioner_with(&self, tweak: impl FnOnce(&mut DockerConfig)) -> DockerProvisioner {
        let mut config = DockerConfig::new().with_image(RUNTIME, IMAGE);
        config.network = Some(self.network.clone());
        tweak(&mut config);
        DockerProvisioner::connect(config)
            .await
            .expect("connecting to the docker daemon")
    }

    /// A request for a fresh workspace (cleaned up with the sandbox) that talks to `platform`.
    fn request(&self, tier: u8, platform: &str) -> ProvisionRequest {
        let id = WorkspaceId::new_v4();
        self.ids.lock().unwrap().push(id);
        ProvisionRequest {
            workspace_id: id,
            name: "Docker Test Agent".into(),
            runtime: RUNTIME.into(),
            tier,
            template_path: None,
            removed_config_files: Vec::new(),
            config_files: BTreeMap::from([(
                "config.yaml".to_owned(),
                b"name: Docker Test Agent\nruntime: berth-agent\n".to_vec(),
            )]),
            workspace_dir: None,
            workspace_access: "none".into(),
            compute: serde_json::json!({}),
            platform_url: platform.to_owned(),
            env: vec![("HEARTBEAT_INTERVAL_SECS".into(), secret("1"))],
            secret_files: vec![(".auth_token".into(), secret(&format!("tok-{id}")))],
        }
    }

    async fn inspect(&self, id: WorkspaceId) -> ContainerInspectResponse {
        self.docker
            .inspect_container(&container_name(id), None)
            .await
            .expect("inspecting the workspace container")
    }

    /// Names of the containers and volumes labelled with this workspace's id.
    async fn leftovers(&self, id: WorkspaceId) -> Vec<String> {
        let label = format!("{LABEL_WORKSPACE_ID}={id}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .unwrap();
        containers
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .chain(
                volumes
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.name),
            )
            .collect()
    }

    /// `/configs` of the workspace's container as (path, mode, uid, gid, content), read through
    /// the archive API.
    async fn configs(&self, id: WorkspaceId) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path("/configs")
            .build();
        let bytes: Vec<u8> = self
            .docker
            .download_from_container(&container_name(id), Some(options))
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .expect("downloading /configs");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            let path = entry.path().unwrap().display().to_string();
            out.push((
                path.trim_end_matches('/').to_owned(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                content,
            ));
        }
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let network = self.network.clone();
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop cannot await, and the test's runtime may be the one running this drop: clean up on
        // a runtime of its own in a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                for id in ids {
                    let force = RemoveContainerOptionsBuilder::new().force(true).build();
                    let _ = docker
                        .remove_container(&container_name(id), Some(force))
                        .await;
                    for volume in [
                        format!("berth-ws-{id}-configs"),
                        format!("berth-ws-{id}-workspace"),
                    ] {
                        let _ = docker
                            .remove_volume(&volume, None::<RemoveVolumeOptions>)
                            .await;
                    }
                }
                if let Err(e) = docker.remove_network(&network).await {
                    eprintln!("warning: removing test network {network}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// One call the agent made to the fake platform.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// The platform's `/registry/register` and `/registry/heartbeat`, answering 200 to everything
/// and recording what it got.
struct FakeRegistry {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeRegistry {
    async fn bind(ip: IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding the fake registry on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&calls));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            calls,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for a call to `path` from workspace `id` and returns it.
    async fn wait_for(&self, path: &str, id: WorkspaceId) -> Call {
        let id = id.to_string();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let found = self
                .calls
                .lock()
                .unwrap()
                .iter()
                .find(|c| {
                    c.path == path
                        && [&c.body["id"], &c.body["workspace_id"]]
                            .iter()
                            .any(|v| v.as_str() == Some(id.as_str()))
                })
                .cloned();
            if let Some(call) = found {
                return call;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {path} call from {id}; got {:?}",
                self.calls.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(calls): State<Arc<Mutex<Vec<Call>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    calls.lock().unwrap().push(Call {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    axum::Json(serde_json::json!({}))
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// `GET url/path` over plain HTTP/1.0; returns the status code and the body.
async fn http_get(url: &str, path: &str) -> (u16, String) {
    let authority = url.strip_prefix("http://").expect("an http:// URL");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET url/health` until the agent answers 200 (it may still be binding right after start).
async fn wait_healthy(url: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let authority = url.trim_start_matches("http://");
        if tokio::net::TcpStream::connect(authority).await.is_ok() {
            let (status, _) = http_get(url, "/health").await;
            if status == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url}/health never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container's environment as a map.
fn env_of(info: &ContainerInspectResponse) -> HashMap<String, String> {
    info.config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The container's mounts as destination → (type, volume name or source, read-write).
fn mounts_of(info: &ContainerInspectResponse) -> BTreeMap<String, (String, String, bool)> {
    info.mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let typ = m.typ.unwrap_or_default();
            let source = if typ == "volume" {
                m.name.unwrap_or_default()
            } else {
                m.source.unwrap_or_default()
            };
            (
                m.destination.unwrap_or_default(),
                (typ, source, m.rw.unwrap_or(false)),
            )
        })
        .collect()
}

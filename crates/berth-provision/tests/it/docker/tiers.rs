//! Tier settings (REFERENCE.md §1.4) and workspace mounts (§1.7), read back from the daemon.

use berth_provision::Provisioner;
use berth_provision::docker::{TierResources, configs_volume};

use super::*;

#[tokio::test]
async fn tier_1_is_sandboxed_with_only_configs_mounted() {
    let sandbox = Sandbox::new().await;
    let registry = FakeRegistry::bind(sandbox.gateway).await;
    let p = sandbox.provisioner().await;
    let shared = tempfile::tempdir().unwrap();
    let mut req = sandbox.request(1, &registry.url());
    let id = req.workspace_id;
    // Ignored at tier 1: nothing but /configs is mounted.
    req.workspace_dir = Some(shared.path().display().to_string());
    req.workspace_access = "read_write".into();

    p.start(req).await.expect("start");
    let info = sandbox.inspect(id).await;
    let host = info.host_config.clone().unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.tmpfs
            .unwrap_or_default()
            .get("/tmp")
            .map(String::as_str),
        Some("rw,noexec,nosuid,size=64m")
    );
    assert_eq!(host.memory.unwrap_or(0), 0);
    assert_eq!(host.nano_cpus.unwrap_or(0), 0);
    assert_ne!(host.privileged, Some(true));
    let mounts = mounts_of(&info);
    assert_eq!(
        mounts.keys().collect::<Vec<_>>(),
        ["/configs"],
        "{mounts:?}"
    );
    assert_eq!(mounts["/configs"].1, configs_volume(id));
    assert_eq!(env_of(&info)["TIER"], "1");

    // The agent runs on its read-only root.
    registry.wait_for("/registry/register", id).await;
    assert!(p.is_running(id).await.unwrap());
}

#[tokio::test]
async fn tier_3_is_privileged_on_the_network_with_a_read_only_bind() {
    let sandbox = Sandbox::new().await;
    let registry = FakeRegistry::bind(sandbox.gateway).await;
    let p = sandbox.provisioner().await;
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().display().to_string();
    let mut req = sandbox.request(3, &registry.url());
    let id = req.workspace_id;
    req.workspace_dir = Some(dir.clone());
    req.workspace_access = "read_only".into();

    let started = p.start(req).await.expect("start");
    let info = sandbox.inspect(id).await;
    let host = info.host_config.clone().unwrap();
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.pid_mode.as_deref(), Some("host"));
    assert_eq!(host.memory, Some(2048 * MIB));
    let host_cpus = sandbox.docker.info().await.unwrap().ncpu.unwrap();
    assert_eq!(host.nano_cpus, Some(host_cpus.min(2) * 1_000_000_000));
    assert_eq!(host.network_mode.as_deref(), Some(sandbox.network.as_str()));
    assert_ne!(host.readonly_rootfs, Some(true));
    assert_eq!(
        mounts_of(&info).get("/workspace"),
        Some(&("bind".into(), dir, false))
    );

    registry.wait_for("/registry/register", id).await;
    wait_healthy(started.url.as_deref().unwrap()).await;
}

#[tokio::test]
async fn tier_4_uses_the_host_network_and_a_loopback_url() {
    let sandbox = Sandbox::new().await;
    // Host networking: the container shares the host's loopback.
    let registry = FakeRegistry::bind(IpAddr::from([127, 0, 0, 1])).await;
    let p = sandbox.provisioner().await;
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().display().to_string();
    let mut req = sandbox.request(4, &registry.url());
    let id = req.workspace_id;
    req.workspace_dir = Some(dir.clone());
    req.workspace_access = "read_write".into();

    let started = p.start(req).await.expect("start");
    let url = started.url.expect("a URL");
    let info = sandbox.inspect(id).await;
    let host = info.host_config.clone().unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.pid_mode.as_deref(), Some("host"));
    assert_eq!(host.memory, Some(4096 * MIB));
    // 4 CPUs, or all the host has: the daemon refuses a cap above its CPU count.
    let host_cpus = sandbox.docker.info().await.unwrap().ncpu.unwrap();
    assert_eq!(host.nano_cpus, Some(host_cpus.min(4) * 1_000_000_000));
    assert!(
        host.port_bindings.unwrap_or_default().is_empty(),
        "nothing is published in host mode"
    );
    let mounts = mounts_of(&info);
    assert_eq!(mounts.get("/workspace"), Some(&("bind".into(), dir, true)));
    assert_eq!(
        mounts.get("/var/run/docker.sock").map(|m| m.0.as_str()),
        Some("bind")
    );

    let env = env_of(&info);
    assert_eq!(env["AGENT_HOST"], "127.0.0.1");
    assert_eq!(url, format!("http://127.0.0.1:{}", env["AGENT_PORT"]));
    assert_eq!(env["AGENT_URL"], url);

    let register = registry.wait_for("/registry/register", id).await;
    assert_eq!(register.body["url"], url.as_str());
    wait_healthy(&url).await;
}

#[tokio::test]
async fn tier_overrides_replace_memory_and_cpu() {
    let sandbox = Sandbox::new().await;
    let registry = FakeRegistry::bind(sandbox.gateway).await;
    let p = sandbox
        .provisioner_with(|c| {
            c.tier_overrides.insert(
                2,
                TierResources {
                    memory_mb: Some(256),
                    cpu_shares: Some(512),
                },
            );
        })
        .await;
    let req = sandbox.request(2, &registry.url());
    let id = req.workspace_id;

    p.start(req).await.expect("start");
    let host = sandbox.inspect(id).await.host_config.unwrap();
    assert_eq!(host.memory, Some(256 * MIB));
    assert_eq!(host.nano_cpus, Some(500_000_000));
}

//! A workspace's whole life on a bridge network: start, what the container looks like, the agent
//! registering, death behind the provisioner's back, stop and volume removal.

use berth_provision::docker::{
    LABEL_INSTALLATION, LABEL_MANAGED, configs_volume, workspace_volume,
};
use berth_provision::{BackendKind, Provisioner};
use bollard::models::RestartPolicyNameEnum;
use bollard::query_parameters::KillContainerOptionsBuilder;

use super::*;

#[tokio::test]
async fn a_workspace_lives_registers_dies_and_leaves_nothing() {
    let sandbox = Sandbox::new().await;
    let registry = FakeRegistry::bind(sandbox.gateway).await;
    let p = sandbox.provisioner().await;
    assert_eq!(p.kind(), BackendKind::Docker);

    let template = tempfile::tempdir().unwrap();
    std::fs::create_dir(template.path().join("prompts")).unwrap();
    std::fs::write(template.path().join("prompts/system.md"), "be brief").unwrap();
    std::fs::write(template.path().join("config.yaml"), "name: from template").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", template.path().join("stolen")).unwrap();

    let mut req = sandbox.request(2, &registry.url());
    let id = req.workspace_id;
    let name = container_name(id);
    req.template_path = Some(template.path().to_owned());
    req.secret_files
        .push((".platform_inbound_secret".into(), secret("inbound")));
    req.env.extend([
        ("MODEL".into(), secret("test-model")),
        ("GITHUB_TOKEN".into(), secret("ghp_x")),
        ("GH_TOKEN".into(), secret("gh_x")),
        ("GITLAB_TOKEN".into(), secret("gl_x")),
        ("GITEA_TOKEN".into(), secret("gt_x")),
        ("GL_TOKEN".into(), secret("glt_x")),
        ("BITBUCKET_TOKEN".into(), secret("bb_x")),
        ("ADMIN_TOKEN".into(), secret("admin")),
        ("GH_PAT".into(), secret("pat_x")),
    ]);

    let started = p.start(req).await.expect("start");
    let url = started.url.clone().expect("a URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // The container as the daemon sees it.
    let info = sandbox.inspect(id).await;
    assert_eq!(info.name.as_deref(), Some(format!("/{name}").as_str()));
    assert_eq!(started.instance_id, info.id);
    let labels = info.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(
        labels.get(LABEL_WORKSPACE_ID).map(String::as_str),
        Some(id.to_string().as_str())
    );
    assert_eq!(
        labels.get(LABEL_INSTALLATION),
        Some(&p.config().installation)
    );

    let env = env_of(&info);
    let expect = [
        ("WORKSPACE_ID", id.to_string()),
        ("WORKSPACE_CONFIG_PATH", "/configs".into()),
        ("PLATFORM_URL", registry.url()),
        ("MOLECULE_URL", registry.url()),
        ("TIER", "2".into()),
        ("WORKSPACE_NAME", "Docker Test Agent".into()),
        ("AGENT_HOST", "0.0.0.0".into()),
        ("AGENT_PORT", "8000".into()),
        ("AGENT_URL", format!("http://{name}:8000")),
        ("MODEL", "test-model".into()),
        ("GH_PAT", "pat_x".into()),
    ];
    for (key, value) in expect {
        assert_eq!(env.get(key), Some(&value), "{key}");
    }
    for key in [
        "ADMIN_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITLAB_TOKEN",
        "GITEA_TOKEN",
        "GL_TOKEN",
        "BITBUCKET_TOKEN",
    ] {
        assert!(!env.contains_key(key), "{key} reached the container");
    }

    let mounts = mounts_of(&info);
    assert_eq!(
        mounts.get("/configs"),
        Some(&("volume".into(), configs_volume(id), true))
    );
    assert_eq!(
        mounts.get("/workspace"),
        Some(&("volume".into(), workspace_volume(id), true))
    );
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    for volume in [configs_volume(id), workspace_volume(id)] {
        let v = sandbox.docker.inspect_volume(&volume).await.unwrap();
        assert_eq!(
            v.labels.get(LABEL_MANAGED).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            v.labels.get(LABEL_WORKSPACE_ID).map(String::as_str),
            Some(id.to_string().as_str())
        );
        assert_eq!(
            v.labels.get(LABEL_INSTALLATION),
            Some(&p.config().installation)
        );
    }

    let host = info.host_config.clone().unwrap();
    assert_eq!(host.memory, Some(512 * MIB));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(
        host.restart_policy.and_then(|r| r.name),
        Some(RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    assert_ne!(host.privileged, Some(true));
    assert_ne!(host.readonly_rootfs, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some(sandbox.network.as_str()));
    let binding = host.port_bindings.unwrap()["8000/tcp"].clone().unwrap();
    assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
    let networks = info.network_settings.unwrap().networks.unwrap();
    let aliases = networks[&sandbox.network]
        .aliases
        .clone()
        .unwrap_or_default();
    assert!(aliases.contains(&name), "{aliases:?}");

    // /configs was filled before start: template (without the symlink), files, secrets.
    let configs = sandbox.configs(id).await;
    let file = |path: &str| {
        configs
            .iter()
            .find(|e| e.0 == format!("configs/{path}"))
            .unwrap_or_else(|| panic!("{path} missing from {configs:?}"))
            .clone()
    };
    let token = file(".auth_token");
    assert_eq!((token.1 & 0o7777, token.2, token.3), (0o600, 1000, 1000));
    assert_eq!(token.4, format!("tok-{id}").into_bytes());
    assert_eq!(file(".platform_inbound_secret").1 & 0o7777, 0o600);
    let config = file("config.yaml");
    // The generated file replaces the template's.
    assert_eq!((config.1 & 0o7777, config.2), (0o644, 1000));
    assert!(String::from_utf8_lossy(&config.4).contains("Docker Test Agent"));
    assert_eq!(file("prompts/system.md").4, b"be brief");
    assert!(
        configs.iter().all(|e| !e.0.contains("stolen")),
        "{configs:?}"
    );

    // The agent registered, with the token from /configs/.auth_token, and answers on the URL.
    let register = registry.wait_for("/registry/register", id).await;
    assert_eq!(
        register.authorization.as_deref(),
        Some(format!("Bearer tok-{id}").as_str())
    );
    assert_eq!(register.body["url"], format!("http://{name}:8000"));
    let heartbeat = registry.wait_for("/registry/heartbeat", id).await;
    assert_eq!(heartbeat.authorization, register.authorization);
    wait_healthy(&url).await;

    assert!(p.is_running(id).await.unwrap());
    assert!(p.list_managed().await.unwrap().contains(&id));
    // Another installation on the same daemon does not list it (its orphan sweep leaves it).
    let other = sandbox
        .provisioner_with(|c| c.installation = "another-installation".into())
        .await;
    assert!(!other.list_managed().await.unwrap().contains(&id));

    // Killed behind the provisioner's back: not running (and the restart policy, which spares
    // a killed container, does not bring it back).
    sandbox
        .docker
        .kill_container(
            &name,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while p.is_running(id).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dead but still listed: the orphan sweeper sees it.
    assert!(p.list_managed().await.unwrap().contains(&id));

    p.stop(id).await.unwrap();
    assert!(!p.is_running(id).await.unwrap());
    assert_eq!(
        sandbox.leftovers(id).await.len(),
        2,
        "the volumes outlive the container"
    );
    p.remove_volumes(id).await.unwrap();
    assert_eq!(sandbox.leftovers(id).await, Vec::<String>::new());
    assert!(!p.list_managed().await.unwrap().contains(&id));

    // Everything is idempotent.
    p.stop(id).await.unwrap();
    p.remove_volumes(id).await.unwrap();
    p.purge(id).await.unwrap();
}

#[tokio::test]
async fn a_restart_replaces_the_container_and_rebuilds_the_configs_volume() {
    let sandbox = Sandbox::new().await;
    let registry = FakeRegistry::bind(sandbox.gateway).await;
    let p = sandbox.provisioner().await;
    let req = sandbox.request(2, &registry.url());
    let id = req.workspace_id;

    let first = p.start(req.clone()).await.expect("first start");
    let mut again = req;
    again.config_files.clear();
    again.secret_files = vec![(".auth_token".into(), secret("rotated"))];
    let second = p.start(again).await.expect("second start");
    assert_ne!(first.instance_id, second.instance_id);

    let mut leftovers = sandbox.leftovers(id).await;
    leftovers.sort();
    assert_eq!(
        leftovers,
        [
            format!("/{}", container_name(id)),
            configs_volume(id),
            workspace_volume(id)
        ]
    );
    // `/configs` was rebuilt from the second request alone: the first start's config.yaml
    // (which the second did not carry) is gone, the token is the new one.
    let configs = sandbox.configs(id).await;
    let content = |p: &str| {
        configs
            .iter()
            .find(|e| e.0 == format!("configs/{p}"))
            .map(|e| e.4.clone())
    };
    assert_eq!(content("config.yaml"), None);
    assert_eq!(content(".auth_token").as_deref(), Some(&b"rotated"[..]));

    // purge: container and volumes in one go.
    p.purge(id).await.unwrap();
    assert_eq!(sandbox.leftovers(id).await, Vec::<String>::new());
}

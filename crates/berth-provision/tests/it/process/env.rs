//! The environment, working directory and log of an agent process.

use std::collections::HashMap;

use berth_provision::{ProvisionRequest, Provisioner};

use super::*;

/// Writes the environment, pid and working directory, then idles.
const DUMP: &str = r#"env > env.out.tmp && mv env.out.tmp env.out; echo $$ > pid.out; pwd > pwd.out; echo hello-log; exec sleep 60"#;

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn agent_gets_the_contract_env_and_nothing_of_the_servers() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("dump", DUMP)]);
    let mut req = request("dump");
    req.env = vec![
        ("OPENAI_API_KEY".into(), secret("sk-test")),
        ("DUP".into(), secret("first")),
        ("DUP".into(), secret("second")),
    ];
    let id = req.workspace_id;

    let started = p.start(req).await.unwrap();
    let ws = root.path().join(id.to_string());
    let env = parse_env(&wait_for_file(&ws.join("workspace/env.out")).await);

    let url = started.url.clone().unwrap();
    let port = url.strip_prefix("http://127.0.0.1:").unwrap().to_owned();
    let configs = ws.join("configs");
    let expected = [
        ("WORKSPACE_ID", id.to_string()),
        ("WORKSPACE_CONFIG_PATH", configs.display().to_string()),
        ("PLATFORM_URL", "http://127.0.0.1:8080".into()),
        ("MOLECULE_URL", "http://127.0.0.1:8080".into()),
        ("TIER", "2".into()),
        ("WORKSPACE_NAME", "Test Agent".into()),
        ("AGENT_HOST", "127.0.0.1".into()),
        ("AGENT_PORT", port.clone()),
        ("AGENT_URL", url.clone()),
        // The server's pid, so the reference agent can follow its death.
        ("BERTH_AGENT_PARENT_PID", std::process::id().to_string()),
        ("OPENAI_API_KEY", "sk-test".into()),
        // Pairs apply in order, so the later one of a repeated key wins.
        ("DUP", "second".into()),
    ];
    for (key, value) in &expected {
        assert_eq!(env.get(*key), Some(value), "{key} in {env:?}");
    }
    assert!(port.parse::<u16>().unwrap() > 0);

    // Nothing but the contract, the few inherited basics and what the shell adds itself.
    let allowed_extra = [
        "PATH", "HOME", "LANG", "TMPDIR", "RUST_LOG", "PWD", "SHLVL", "_", "OLDPWD",
    ];
    for key in env.keys() {
        assert!(
            expected.iter().any(|(k, _)| k == key) || allowed_extra.contains(&key.as_str()),
            "{key} leaked into the agent's environment"
        );
    }
    // Cargo sets this for every test run; it stands for any variable of the server's own.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!env.contains_key("CARGO_MANIFEST_DIR"));
    if std::env::var_os("PATH").is_some() {
        assert!(env.contains_key("PATH"), "PATH is kept");
    }

    // instance_id is the agent's pid; the isolated working directory is `<root>/<id>/workspace`.
    let pid = wait_for_file(&ws.join("workspace/pid.out")).await;
    assert_eq!(started.instance_id.as_deref(), Some(pid.trim()));
    let pwd = wait_for_file(&ws.join("workspace/pwd.out")).await;
    assert_eq!(
        std::fs::canonicalize(pwd.trim()).unwrap(),
        std::fs::canonicalize(ws.join("workspace")).unwrap()
    );

    // stdout goes to the log the provisioner names.
    assert_eq!(p.log_path(id), ws.join("agent.log"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !std::fs::read_to_string(p.log_path(id))
        .unwrap_or_default()
        .contains("hello-log")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no output in the log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn a_shared_workspace_dir_is_the_working_directory() {
    let root = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("dump", DUMP)]);
    let req = ProvisionRequest {
        workspace_dir: Some(shared.path().display().to_string()),
        workspace_access: "read_write".into(),
        ..request("dump")
    };
    let id = req.workspace_id;
    p.start(req).await.unwrap();
    let pwd = wait_for_file(&shared.path().join("pwd.out")).await;
    assert_eq!(
        std::fs::canonicalize(pwd.trim()).unwrap(),
        std::fs::canonicalize(shared.path()).unwrap()
    );
    p.stop(id).await.unwrap();

    // With access `none` the directory is not shared, even when named.
    let req = ProvisionRequest {
        workspace_dir: Some(shared.path().display().to_string()),
        workspace_access: "none".into(),
        ..request("dump")
    };
    let id = req.workspace_id;
    p.start(req).await.unwrap();
    let ws = root.path().join(id.to_string());
    wait_for_file(&ws.join("workspace/pwd.out")).await;
    p.stop(id).await.unwrap();
}

//! The process provisioner, with `/bin/sh -c` scripts standing in for agent runtimes.

mod configs;
mod env;
mod inside;
mod leftovers;
mod lifecycle;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_domain::WorkspaceId;
use berth_provision::{ProcessConfig, ProcessProvisioner, ProvisionRequest};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use secrecy::SecretString;

/// Upper bound for anything a script is expected to do "soon"; generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A provisioner rooted in `root` whose runtimes run the given shell scripts.
fn provisioner(root: &Path, scripts: &[(&str, &str)]) -> ProcessProvisioner {
    provisioner_with(root, scripts, ProcessConfig::DEFAULT_STOP_GRACE)
}

/// Same, with a custom stop grace.
fn provisioner_with(
    root: &Path,
    scripts: &[(&str, &str)],
    stop_grace: Duration,
) -> ProcessProvisioner {
    let mut config = ProcessConfig::new(root);
    for (runtime, script) in scripts {
        config = config.with_command(*runtime, ["/bin/sh", "-c", script]);
    }
    config.stop_grace = stop_grace;
    ProcessProvisioner::new(config)
}

/// A minimal request for `runtime`.
fn request(runtime: &str) -> ProvisionRequest {
    ProvisionRequest {
        workspace_id: WorkspaceId::new_v4(),
        name: "Test Agent".into(),
        runtime: runtime.into(),
        tier: 2,
        template_path: None,
        config_files: BTreeMap::new(),
        removed_config_files: Vec::new(),
        workspace_dir: None,
        workspace_access: "none".into(),
        compute: serde_json::json!({}),
        platform_url: "http://127.0.0.1:8080".into(),
        env: vec![],
        secret_files: vec![],
    }
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// Waits until `path` exists and is non-empty, and returns its content.
async fn wait_for_file(path: &Path) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process with this pid exists (the tests' children are reaped by the provisioner,
/// so a stopped agent's pid is gone).
fn pid_alive(pid: &str) -> bool {
    let pid: i32 = pid.trim().parse().expect("numeric pid");
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => panic!("probing pid {pid}: {e}"),
    }
}

//! Pid files and the agents a killed server left behind (`ProcessProvisioner::stop_leftovers`).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command};

use berth_provision::Provisioner;

use super::*;

/// Field 22 (start time) and field 3 (state) of `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(19)?.parse().ok()?, fields[0].chars().next()?))
}

/// Whether `pid` runs (a zombie has exited).
fn runs(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

/// A pid that named a process a moment ago and names none now.
fn gone_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

/// An "agent" a previous server left: `script` under `/bin/sh -c`, leading its own process
/// group like the provisioner's agents, with the pid of its background `sleep` in `child.pid`.
struct Leftover {
    shell: Child,
    child: u32,
}

impl Leftover {
    fn spawn(dir: &Path, script: &str) -> Leftover {
        std::fs::create_dir_all(dir).unwrap();
        let shell = Command::new("/bin/sh")
            .args(["-c", script])
            .current_dir(dir)
            .process_group(0)
            .spawn()
            .expect("spawn leftover");
        Leftover { shell, child: 0 }
    }

    async fn ready(mut self, dir: &Path) -> Leftover {
        self.child = wait_for_file(&dir.join("child.pid"))
            .await
            .trim()
            .parse()
            .unwrap();
        self
    }

    fn pid(&self) -> u32 {
        self.shell.id()
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        for pid in [self.shell.id(), self.child] {
            if pid != 0 && runs(pid) {
                let pid = Pid::from_raw(i32::try_from(pid).unwrap());
                let _ = kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.shell.wait();
    }
}

/// Writes the pid file the provisioner would have written for `agent`, started by `server`.
fn pid_file(path: &Path, agent: (u32, u64), server: (u32, u64)) {
    std::fs::write(
        path,
        format!(
            "pid={}\nstart={}\nserver_pid={}\nserver_start={}\n",
            agent.0, agent.1, server.0, server.1
        ),
    )
    .unwrap();
}

/// Polls until `pid` no longer runs.
async fn wait_gone(pid: u32, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while runs(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (pid {pid}) still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_provisioner_records_each_agent_and_forgets_it_when_stopped() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("idle", "exec sleep 60")]);
    let req = request("idle");
    let id = req.workspace_id;
    let started = p.start(req).await.unwrap();
    let pid: u32 = started.instance_id.unwrap().parse().unwrap();

    let text = std::fs::read_to_string(p.pid_path(id)).expect("pid file written");
    assert_eq!(
        p.pid_path(id),
        root.path().join(id.to_string()).join("agent.pid")
    );
    let me = std::process::id();
    let want = format!(
        "pid={pid}\nstart={}\nserver_pid={me}\nserver_start={}\n",
        stat(pid).unwrap().0,
        stat(me).unwrap().0
    );
    assert_eq!(text, want);

    // A second provisioner over the same root (a second server on one data directory) leaves
    // the agent of a server that still runs alone.
    let other = provisioner(root.path(), &[]);
    assert_eq!(other.stop_leftovers().await, 0);
    assert!(runs(pid));
    assert!(p.pid_path(id).exists());

    p.stop(id).await.unwrap();
    assert!(!p.pid_path(id).exists(), "pid file removed on stop");

    // And a clean shutdown removes them too.
    let req = request("idle");
    let id = req.workspace_id;
    p.start(req).await.unwrap();
    assert!(p.pid_path(id).exists());
    p.shutdown().await;
    assert!(!p.pid_path(id).exists(), "pid file removed on shutdown");
}

#[tokio::test]
async fn agents_of_a_killed_server_are_stopped_and_nothing_else_is_touched() {
    let root = tempfile::tempdir().unwrap();
    let dead_server = (gone_pid(), 12_345);
    let ws = |id: WorkspaceId| -> PathBuf { root.path().join(id.to_string()) };

    // Polite: exits on SIGTERM, and so does its child.
    let polite_id = WorkspaceId::new_v4();
    let polite = Leftover::spawn(&ws(polite_id), "sleep 60 & echo $! > child.pid; wait")
        .ready(&ws(polite_id))
        .await;
    pid_file(
        &ws(polite_id).join("agent.pid"),
        (polite.pid(), stat(polite.pid()).unwrap().0),
        dead_server,
    );
    // Stubborn: ignores SIGTERM, and so does its child; only SIGKILL ends them.
    let stubborn_id = WorkspaceId::new_v4();
    let stubborn = Leftover::spawn(
        &ws(stubborn_id),
        "trap '' TERM; sleep 60 & echo $! > child.pid; wait; wait; wait",
    )
    .ready(&ws(stubborn_id))
    .await;
    pid_file(
        &ws(stubborn_id).join("agent.pid"),
        (stubborn.pid(), stat(stubborn.pid()).unwrap().0),
        dead_server,
    );
    // A pid file whose pid is now an unrelated process (same pid, another start time).
    let reused_id = WorkspaceId::new_v4();
    let unrelated = Leftover::spawn(&ws(reused_id), "sleep 60 & echo $! > child.pid; wait")
        .ready(&ws(reused_id))
        .await;
    pid_file(
        &ws(reused_id).join("agent.pid"),
        (unrelated.pid(), stat(unrelated.pid()).unwrap().0 + 1),
        dead_server,
    );
    // An agent that is gone, and a file that is not a pid file.
    let stale_id = WorkspaceId::new_v4();
    std::fs::create_dir_all(ws(stale_id)).unwrap();
    pid_file(
        &ws(stale_id).join("agent.pid"),
        (gone_pid(), 1),
        dead_server,
    );
    let garbage_id = WorkspaceId::new_v4();
    std::fs::create_dir_all(ws(garbage_id)).unwrap();
    std::fs::write(ws(garbage_id).join("agent.pid"), "pid=oops\n").unwrap();

    let p = provisioner_with(root.path(), &[], Duration::from_secs(1));
    assert_eq!(p.stop_leftovers().await, 2);

    for (what, pid) in [
        ("the polite agent", polite.pid()),
        ("the polite agent's child", polite.child),
        ("the stubborn agent", stubborn.pid()),
        ("the stubborn agent's child", stubborn.child),
    ] {
        wait_gone(pid, what).await;
    }
    assert!(runs(unrelated.pid()), "an unrelated process was signalled");
    assert!(runs(unrelated.child), "an unrelated process was signalled");
    for id in [polite_id, stubborn_id, reused_id, stale_id, garbage_id] {
        assert!(!p.pid_path(id).exists(), "{id}: pid file left behind");
    }
    // Nothing left for a second look.
    assert_eq!(p.stop_leftovers().await, 0);
    assert!(runs(unrelated.pid()));
}

#[tokio::test]
async fn a_root_that_does_not_exist_has_no_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(&root.path().join("never-created"), &[]);
    assert_eq!(p.stop_leftovers().await, 0);
}

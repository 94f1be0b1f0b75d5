//! `BERTH_AGENT_PARENT_PID`: the agent dies with the berth server that started it, exits at
//! once when that server is already gone, and runs on under a wrapper while the server lives.

use super::*;

/// Plays the berth server: runs the agent (`$0`) in the background with this shell's pid as
/// `BERTH_AGENT_PARENT_PID`, writes the agent's pid to `agent.pid`, and waits.
const SERVER: &str = r#"BERTH_AGENT_PARENT_PID=$$ "$0" & echo $! > agent.pid.tmp && mv agent.pid.tmp agent.pid; wait"#;

/// The state letter of `pid` (`R`, `S`, `Z`, …), or `None` when there is no such process.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether `pid` runs (a zombie has exited).
fn runs(pid: i32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Kills a process the test may leave behind when it fails.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if runs(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn the_agent_gets_sigterm_when_its_server_is_killed() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let mut server = Agent::spawn_via(&["/bin/sh", "-c", SERVER], &platform, Some("tok-p"), &[]);
    let pid_file = server.log.with_file_name("agent.pid");
    let agent: i32 = eventually(&server, "the agent's pid", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let _guard = KillOnDrop(agent);
    eventually(&server, "a registration", || {
        fake.calls("/registry/register").into_iter().next()
    })
    .await;
    assert!(runs(agent));

    // The "server" dies without a chance to stop its agent.
    server.signal(Signal::SIGKILL);
    server.exit_status().await;
    eventually(&server, "the agent to exit after its server died", || {
        (!runs(agent)).then_some(())
    })
    .await;
    let out = server.output();
    assert!(out.contains("SIGTERM"), "{out}");
    assert!(out.contains("shutting down"), "{out}");
}

#[tokio::test]
async fn an_agent_whose_server_is_already_gone_exits_without_registering() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    // A pid that was the server's a moment ago and is gone now.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id().expect("pid").to_string();
    gone.wait().await.expect("wait");

    let mut agent = Agent::spawn(
        &platform,
        Some("tok-g"),
        &[("BERTH_AGENT_PARENT_PID", &gone_pid)],
    );
    let status = agent.exit_status().await;
    assert!(!status.success(), "{status}");
    let out = agent.output();
    assert!(out.contains(&format!("(pid {gone_pid}) is gone")), "{out}");
    assert!(fake.calls("/registry/register").is_empty());
}

#[tokio::test]
async fn under_a_wrapper_the_agent_runs_on_while_its_server_lives() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    // The "server" runs, but the agent's parent (this test) is not it: as under a shell script
    // that runs the agent without `exec`.
    let mut server = Command::new("sleep")
        .arg("60")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let server_pid = server.id().expect("pid").to_string();
    let mut agent = Agent::spawn(
        &platform,
        Some("tok-w"),
        &[("BERTH_AGENT_PARENT_PID", &server_pid)],
    );
    eventually(&agent, "a registration", || {
        fake.calls("/registry/register").into_iter().next()
    })
    .await;
    assert!(agent.child.try_wait().expect("try_wait").is_none());
    let out = agent.output();
    assert!(out.contains("started through a wrapper"), "{out}");

    agent.signal(Signal::SIGTERM);
    assert!(agent.exit_status().await.success());
    server.kill().await.expect("kill sleep");
}

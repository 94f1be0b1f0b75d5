//! Dying with the berth server that started the agent.
//!
//! berth's process backend runs each agent as a child of the server and sets
//! `BERTH_AGENT_PARENT_PID` to the server's pid. An agent that outlived a server killed with
//! `kill -9` would keep heartbeating with a token its next start revokes, beside the agent that
//! start runs. So, on Linux, the agent asks the kernel for SIGTERM when its parent dies (the
//! parent-death signal; SIGTERM ends it as cleanly as a stop does) and, should the server
//! already have died before that was arranged, exits at once.
//!
//! Started through a wrapper (a shell script that runs the agent without `exec`), the parent is
//! the wrapper, not the server: then only a server that is already gone ends the agent here, and
//! the server's next start stops the wrapper's process group from its pid file.

/// Follows the server named by `BERTH_AGENT_PARENT_PID` (`parent`), if any: an error when that
/// server is already gone, so the agent exits instead of running on for no one.
pub(crate) fn follow(parent: Option<&str>) -> anyhow::Result<()> {
    let Some(raw) = parent.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let server: i32 = raw
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| anyhow::anyhow!("BERTH_AGENT_PARENT_PID {raw:?} is not a process id"))?;
    imp::follow(server)
}

#[cfg(target_os = "linux")]
mod imp {
    use anyhow::{Context, bail};
    use nix::errno::Errno;
    use nix::sys::prctl::set_pdeathsig;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::{Pid, getppid};

    pub(super) fn follow(server: i32) -> anyhow::Result<()> {
        if getppid().as_raw() == server {
            set_pdeathsig(Signal::SIGTERM).context("setting the parent-death signal")?;
            // The server may have died between starting the agent and the line above: then the
            // agent was already handed to another parent, and no signal will come.
            if getppid().as_raw() != server {
                bail!("the berth server that started this agent (pid {server}) is gone");
            }
            tracing::debug!(server.pid = server, "following the server's death");
            return Ok(());
        }
        // Not the server's own child: started through a wrapper, or the server is gone already.
        // A server killed a moment ago may still be a zombie, waiting for its own parent to reap
        // it: signal 0 reaches a zombie, so that counts as gone too (else an agent whose server
        // was killed between starting it and the check above would run on forever).
        if is_zombie(server) {
            bail!("the berth server that started this agent (pid {server}) is gone (a zombie)");
        }
        match kill(Pid::from_raw(server), None) {
            Err(Errno::ESRCH) => {
                bail!("the berth server that started this agent (pid {server}) is gone")
            }
            _ => {
                tracing::info!(
                    server.pid = server,
                    parent.pid = getppid().as_raw(),
                    "started through a wrapper: the server stops this agent, not its death"
                );
                Ok(())
            }
        }
    }

    /// Whether `pid` is a process that has exited and not been reaped (state `Z`, or `X` while
    /// it is being reaped), from `/proc/<pid>/stat`: the state follows the command name's closing
    /// parenthesis (the name itself may contain spaces and parentheses).
    pub(super) fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X")
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    /// No parent-death signal here: the server's next start stops leftover agents instead.
    pub(super) fn follow(_server: i32) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server killed with `kill -9` is a zombie until its parent reaps it; an agent started
    /// just before must see it as gone (found by the chaos suite: such an agent ran on beside the
    /// one the next server started).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_server_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = i32::try_from(child.id()).expect("pid");
        let mut zombie = false;
        for _ in 0..200 {
            if imp::is_zombie(pid) {
                zombie = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie, "the exited, unreaped child is a zombie");
        let err = follow(Some(&pid.to_string())).expect_err("a zombie server is gone");
        assert!(err.to_string().contains("is gone"), "{err}");
        child.wait().expect("reap");
        assert!(!imp::is_zombie(pid), "reaped: no zombie (and no process)");
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(!imp::is_zombie(me));
    }

    #[test]
    fn unset_or_empty_follows_nothing_and_garbage_is_refused() {
        assert!(follow(None).is_ok());
        assert!(follow(Some("  ")).is_ok());
        for bad in ["abc", "0", "-5"] {
            let err = follow(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("not a process id"), "{bad}: {err}");
        }
    }
}

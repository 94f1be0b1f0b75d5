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

//! Pid files, so that a server which did not stop cleanly (`kill -9`, a crash, the OOM killer)
//! finds the agents its previous run left behind and stops them at its next start.
//!
//! `<root>/<uuid>/agent.pid` names the agent by its pid and its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot), and the server that started it the same way:
//!
//! ```text
//! pid=4242
//! start=1234567
//! server_pid=4100
//! server_start=1230000
//! ```
//!
//! A pid alone may name an unrelated process by the time it is read (pids are reused); a pid
//! with the same start time is the same process. The server's pair is the per-server marker: a
//! file whose server still runs belongs to a live server (a second `berth serve` started over
//! the same data directory) and is left alone. Linux only, since it reads `/proc`; elsewhere no
//! file is written and none is acted on.

use std::fs;
use std::io::Write;
use std::path::Path;

/// A process named so that a reused pid never matches: its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) pid: i32,
    pub(super) start: u64,
}

impl Stamp {
    /// The stamp of the live process `pid`; `None` when there is none (or only a zombie), or
    /// `/proc` cannot tell.
    pub(super) fn of(pid: i32) -> Option<Stamp> {
        let stat = ProcStat::read(pid)?;
        (stat.state != 'Z' && stat.state != 'X').then_some(Stamp {
            pid,
            start: stat.start,
        })
    }

    /// Whether the very process this stamp names still runs.
    pub(super) fn is_live(self) -> bool {
        Stamp::of(self.pid) == Some(self)
    }

    /// Whether the process leads its own process group (every agent is started as one).
    pub(super) fn leads_group(self) -> bool {
        ProcStat::read(self.pid).is_some_and(|s| s.pgrp == self.pid)
    }
}

/// The fields of `/proc/<pid>/stat` berth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: `R`, `S`, `Z`, …
    state: char,
    /// Field 5: the process-group id.
    pgrp: i32,
    /// Field 22: the start time, in clock ticks after boot.
    start: u64,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        if pid <= 0 {
            return None;
        }
        ProcStat::parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Field 2 (the command name) is in parentheses and may itself hold spaces and
    /// parentheses, so the fields are counted from after its last `)`.
    fn parse(text: &str) -> Option<ProcStat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3.
        let field = |n: usize| fields.get(n - 3).copied();
        Some(ProcStat {
            state: field(3)?.chars().next()?,
            pgrp: field(5)?.parse().ok()?,
            start: field(22)?.parse().ok()?,
        })
    }
}

/// What one pid file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PidFile {
    /// The agent process (its process-group leader).
    pub(super) agent: Stamp,
    /// The server that started it.
    pub(super) server: Stamp,
}

impl PidFile {
    fn render(&self) -> String {
        format!(
            "pid={}\nstart={}\nserver_pid={}\nserver_start={}\n",
            self.agent.pid, self.agent.start, self.server.pid, self.server.start
        )
    }

    fn parse(text: &str) -> Option<PidFile> {
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim())
        };
        Some(PidFile {
            agent: Stamp {
                pid: value("pid")?.parse().ok()?,
                start: value("start")?.parse().ok()?,
            },
            server: Stamp {
                pid: value("server_pid")?.parse().ok()?,
                start: value("server_start")?.parse().ok()?,
            },
        })
    }

    /// Reads `path`: `Ok(None)` when there is no file, an error naming the problem when it
    /// cannot be read or makes no sense.
    pub(super) fn read(path: &Path) -> Result<Option<PidFile>, String> {
        match fs::read_to_string(path) {
            Ok(text) => PidFile::parse(&text)
                .map(Some)
                .ok_or_else(|| format!("{} is not a berth pid file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Records the agent `pid`, started by `server`, in `path` (through a temporary file and a
    /// rename, so a reader never sees half a file). Fails when the agent is already gone.
    pub(super) fn write(path: &Path, pid: u32, server: Stamp) -> std::io::Result<()> {
        let agent = i32::try_from(pid)
            .ok()
            .and_then(Stamp::of)
            .ok_or_else(|| std::io::Error::other(format!("process {pid} is gone")))?;
        let tmp = path.with_extension("pid.tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(PidFile { agent, server }.render().as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    }
}

/// Removes the pid file at `path`; no file is fine.
pub(super) fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a pid file"),
    }
}

/// The live processes, other than the leader itself, in the process group `pgid`.
pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != pgid)
        .filter(|&pid| {
            ProcStat::read(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and parentheses in it.
        let line = "4242 (my (odd) agent) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 \
                    3 0 987654 12345 678";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start: 987_654
            })
        );
        assert_eq!(ProcStat::parse("4242 (truncated) S 1"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn this_process_has_a_stamp_and_a_reused_pid_does_not_match() {
        let me = Stamp::of(i32::try_from(std::process::id()).unwrap()).expect("own stamp");
        assert!(me.is_live());
        let reused = Stamp {
            start: me.start + 1,
            ..me
        };
        assert!(!reused.is_live());
        assert_eq!(Stamp::of(0), None);
        assert_eq!(Stamp::of(-1), None);
    }

    #[test]
    fn a_pid_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.pid");
        let me = Stamp::of(i32::try_from(std::process::id()).unwrap()).unwrap();
        PidFile::write(&path, std::process::id(), me).unwrap();
        assert_eq!(
            PidFile::read(&path).unwrap(),
            Some(PidFile {
                agent: me,
                server: me
            })
        );
        assert!(!path.with_extension("pid.tmp").exists());

        fs::write(&path, "pid=12\nstart=x\n").unwrap();
        assert!(
            PidFile::read(&path)
                .unwrap_err()
                .contains("not a berth pid file")
        );
        remove(&path);
        assert_eq!(PidFile::read(&path).unwrap(), None);
        remove(&path);
    }
}

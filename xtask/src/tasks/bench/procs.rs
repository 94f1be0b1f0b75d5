//! The processes a bench run starts, each behind a guard whose `Drop` ends it, plus a scratch
//! directory that removes itself: whatever way the run ends, nothing is left behind.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::process::display;

/// How long berth may take to answer `/health` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory deleted (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `path` afresh (removing a leftover of an earlier run with the same name).
    pub fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("xtask: could not remove {}: {err}", self.path.display());
        }
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A running `berth serve`, stopped with SIGTERM (then SIGKILL) on drop. The graceful stop
/// matters: under the process provisioner berth stops its agent processes on the way out, and
/// those live in process groups of their own that a SIGKILL of berth would leave running.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` (a `berth serve … --listen 127.0.0.1:<port>` command), logging to `log`, and
    /// waits until `/health` answers 200.
    pub fn start(mut cmd: Command, port: u16, log: PathBuf) -> Result<Self> {
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", display(&cmd)))?;
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            server.ensure_running()?;
            if http_status(port, "/health").is_ok_and(|status| status == 200) {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!(
                    "berth did not answer /health within {} s; its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    server.log_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail when the server exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("berth exited ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Peak resident memory in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM")
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} line in {path}"))
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    fn stop(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(status));
        }
        // std can only SIGKILL; `kill` sends the SIGTERM berth shuts down gracefully on.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: berth did not stop within {} s; killing it",
            STOP_TIMEOUT.as_secs()
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("xtask: error stopping berth: {err:#}");
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:`port`, over a raw HTTP/1.0 exchange (xtask has
/// no HTTP client).
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))
}

/// A helper process that runs until its stdin closes (`berth-loadgen serve-fixed`), or that
/// finishes on its own (a paced background load); killed on drop if still running.
pub struct Background {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Background {
    /// Spawns `cmd` with piped stdin/stdout; stdout and stderr go to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let err = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(err.try_clone()?)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", display(&cmd)))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Waits (at most `timeout`) for the process to end by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                bail!(
                    "helper process did not finish within {} s",
                    timeout.as_secs()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing stdin asks serve-fixed to stop; give it a moment, then make sure.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion within `timeout` (killing it after that), with stdout and stderr
/// written to files under `scratch`; returns stdout, or fails with both.
pub fn run_bounded(cmd: &mut Command, timeout: Duration, scratch: &Path) -> Result<String> {
    let out_path = scratch.join(format!("out-{}", free_suffix()));
    let err_path = out_path.with_extension("err");
    let out = fs::File::create(&out_path)?;
    let err = fs::File::create(&err_path)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", display(cmd)))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(10));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => bail!("{} failed ({status}):\n{stdout}{stderr}", display(cmd)),
        None => bail!(
            "{} did not finish within {} s:\n{stdout}{stderr}",
            display(cmd),
            timeout.as_secs()
        ),
    }
}

/// A counter for unique scratch file names within this process.
fn free_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

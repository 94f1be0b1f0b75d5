//! Looking inside a Docker workspace: its files through the Engine's archive API, one-shot
//! commands and terminals through its exec API (the [`Provisioner`](crate::Provisioner) methods
//! `list_files`, `read_file`, `write_files`, `delete_file`, `exec`, `open_terminal`; the contract
//! is in [`crate::inside`]). Every operation first inspects the container `berth-ws-<uuid>`: one
//! that is absent, stopped, paused or restarting answers [`InsideError::NotRunning`].
//!
//! **Files.** A root is the container path of the same name (`/configs`, `/workspace`, `/home`,
//! `/plugins`). Before a path is read, written, deleted or listed, every prefix of `root/path`
//! is stat'ed with `HEAD /containers/{id}/archive` (the daemon's `X-Docker-Container-Path-Stat`,
//! which does not follow the last component): a symbolic link anywhere on the way is refused
//! (`path crosses a symbolic link: <rel>`; only `delete_file` may remove a link itself), and so
//! are device files, FIFOs and sockets. The daemon itself resolves links in a path inside the
//! container's root, so a planted link can never reach the host, but without the walk it could
//! lead a request out of its root (`/workspace/evil -> /etc`).
//!
//! - *Listing* downloads `root/dir` as a tar (`GET …/archive`) and reads only its headers
//!   (type, size, mtime); the data is skipped. It needs nothing inside the image, so it works on
//!   `FROM scratch` images, but the daemon streams the whole subtree, contents included: `depth`
//!   and the pruned directories ([`LISTING_PRUNED_DIRS`]) limit what is returned, not what is
//!   read, so listing a large tree costs as much as copying it (the tar is parsed as it streams,
//!   never held in memory). Entries whose names are not UTF-8 are left out (they could not be
//!   named back through a [`RelPath`]); a hard link whose first occurrence was not listed reports
//!   size 0.
//! - *Reading* downloads the one file: the size in the stat (and again in the tar header) is
//!   checked against the limit before any data is read, and the bytes come back exactly.
//! - *Writing* uploads one tar into the root directory with entries relative to it (not
//!   `/configs/…`, REFERENCE-3.md bug 3.4): the missing parent directories (0755) and each file
//!   (0644) under a temporary sibling name `.<name>.berth-tmp-<random hex>`, all owned by
//!   1000:1000 (the agent user). Each file is then renamed over its target by an exec of
//!   `mv -f -T -- <tmp> <target>` (an argv, no shell) as the container's default user, so a
//!   reader never sees half a file; with several files and a `/bin/sh`, one exec renames up to
//!   32 of them in order (`sh -c` looping over its arguments, never a command line built from
//!   paths). Existing parents are not in the tar, so their owner and mode stay as they are.
//!   **Fallback:** when the image has no `mv` (`/bin/mv`, `/usr/bin/mv`; a `FROM scratch`
//!   image), or the rename fails (say the default user may not write that directory), the file
//!   is uploaded under its final name instead; the daemon then removes the old file and writes
//!   the new one, which is not atomic. Both are logged at debug, and a temporary file left by a
//!   failed rename is removed with `rm -f` run as root (only that random name, in the directory
//!   just checked).
//! - *Deleting* runs `rm -rf -- <abs>` as the default user and checks its exit code.
//!
//! The walk and the operation are separate requests: an agent that swaps a directory for a link
//! between them can still steer one request to another place inside its own container. That is
//! the agent's own container, which it can change anyway; the host is never reachable.
//!
//! **Commands.** `exec` runs `/bin/sh -c 'echo "berth-pid:$$"; exec "$@"' sh <cmd…>`: the
//! command gets its argv untouched (never a shell line), and the first line of its stdout, which
//! is stripped, tells berth its pid inside the container. The runtime makes every exec a session
//! leader, so on a timeout (or when the caller goes away) a second exec kills the session: its
//! process group, every process whose session is that pid (a `/proc` scan in `sh`, with no tool
//! but the shell's builtins), then the pid itself. The image therefore needs a `/bin/sh`; without
//! one exec and the terminal are refused with a message saying so.
//!
//! **Terminals** run `/bin/sh -c 'echo "berth-pid:$$"; exec bash -l'` (or `sh -l` without bash)
//! with a TTY, `TERM=xterm-256color`, the image's default user and the workspace directory. The
//! pid line is read and dropped before anything is forwarded (and before any input is written,
//! so the TTY cannot echo a keystroke ahead of it). The TTY stream is attached with a raw HTTP
//! upgrade on the daemon's socket rather than bollard's `start_exec`: bollard's decoder guesses
//! the framing from the first byte of each read (0, 1 or 2 starts a multiplexed frame header),
//! which a TTY's output may begin with; its next 7 bytes are then taken for a header and a
//! length (up to 4 GiB of "payload" to wait for). Tried against this daemon, the 8 bytes
//! `00 00 00 00 ff ff ff ff` printed in a TTY exec vanished from bollard's output. Dropping the
//! input sender kills the session as above and closes the connection, so no shell outlives its
//! client (REFERENCE-3.md bug 3.21).
//!
//! Killed processes whose parent died first are reparented to the container's pid 1, which has
//! to reap them: every workspace container therefore runs with Docker's init as pid 1
//! (`HostConfig.init`, `docker.rs`), which reaps them, instead of the image's entrypoint (an
//! agent rarely reaps orphans it did not start, and would keep them as zombies).

use std::collections::{BTreeSet, VecDeque};
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::body_full;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ResizeExecOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::{CONFIGS_DIR, DockerProvisioner, WORKSPACE_DIR, container_name};
use super::{daemon_message, is_not_found};
use crate::inside::{
    ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, LISTING_PRUNED_DIRS,
    LISTING_SKIPPED_FILES, MAX_LIST_DEPTH, RelPath, TERMINAL_CHUNK, Target, TermSize, Terminal,
    TerminalInput,
};

/// What every workspace answers when its container is not running.
const NOT_RUNNING: &str = "the workspace's container is not running";
/// The shell exec and the terminal run (and the session kill).
const SH: &str = "/bin/sh";
/// The refusal when the image has no [`SH`].
const NO_SHELL: &str = "the workspace image has no /bin/sh, which exec and the terminal need";
/// The first line an exec or terminal wrapper prints: `berth-pid:<pid>`.
const PID_MARKER: &str = "berth-pid:";
/// The longest first line that can still be the pid marker.
const MARKER_MAX: usize = 64;
/// Prints the marker, then becomes the command (`"$@"`), keeping the pid.
const EXEC_WRAPPER: &str = "echo \"berth-pid:$$\"; exec \"$@\"";
/// Prints the marker, then becomes a login shell: bash when the image has it, else sh.
const TERMINAL_WRAPPER: &str = "echo \"berth-pid:$$\"; \
     if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";
/// Kills the session `$1`: its process group, every process whose session id (field 6 of
/// `/proc/<pid>/stat`, the 4th after the command name) is `$1`, then `$1` itself. Builtins only.
const KILL_SESSION: &str = r#"t=$1
kill -KILL -- "-$t" 2>/dev/null
for d in /proc/[0-9]*; do
  read -r l 2>/dev/null < "$d/stat" || continue
  set -- ${l##*) }
  [ "$4" = "$t" ] && kill -KILL "${d#/proc/}" 2>/dev/null
done
kill -KILL "$t" 2>/dev/null
exit 0"#;
/// Where `mv` is looked for (the rename of an atomic write).
const MV_PATHS: [&str; 2] = ["/bin/mv", "/usr/bin/mv"];
/// Renames `tmp dest` pairs in order with the `mv` at `$1`; prints how many it renamed.
const RENAME_ALL: &str = r#"m=$1; shift; i=0
while [ $# -ge 2 ]; do
  "$m" -f -T -- "$1" "$2" || { echo "$i"; exit 1; }
  i=$((i+1)); shift 2
done
echo "$i""#;
/// Paths of one write checked at the same time.
const WALKS_AT_ONCE: usize = 8;
/// Files renamed by one exec (their paths, up to 4 KiB each, stay well below `ARG_MAX`).
const RENAME_BATCH: usize = 32;
/// Bound on berth's own helper execs (`mv`, `rm`, the session kill).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// Output kept of a helper exec, per stream.
const HELPER_OUTPUT: usize = 16 * 1024;
/// How long a terminal may take to print its pid line.
const MARKER_TIMEOUT: Duration = Duration::from_secs(15);
/// After a kill, how long the output may take to end before the connection is dropped.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Looks at an exec that ended its output but is not reaped yet, and the pause between them.
const EXIT_POLLS: u32 = 250;
const EXIT_POLL: Duration = Duration::from_millis(20);
/// Terminal output chunks read ahead of a client that does not read.
const TERMINAL_AHEAD: usize = 16;
/// Terminal input bytes queued for a shell that does not read, before input is throttled.
const TERMINAL_INPUT_QUEUE: usize = 1024 * 1024;
/// How often a throttled terminal looks whether its client went away.
const TERMINAL_CLOSED_POLL: Duration = Duration::from_millis(250);
/// Longest file name kept in a temporary name (`.<name>.berth-tmp-<hex>` stays below 255 bytes).
const TMP_NAME_KEEP: usize = 200;

// Go's `os.FileMode` type bits, as the archive stat reports them.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
const GO_MODE_IRREGULAR: u32 = 1 << 19;

// ---------------------------------------------------------------------------------------------
// The container

/// A running container, as an operation needs it.
struct Running {
    name: String,
    /// Whether `/workspace` is mounted (the default working directory then).
    workspace_mounted: bool,
}

impl Running {
    fn default_cwd(&self) -> &'static str {
        if self.workspace_mounted {
            WORKSPACE_DIR
        } else {
            CONFIGS_DIR
        }
    }
}

async fn running(p: &DockerProvisioner, target: &Target) -> Result<Running, InsideError> {
    let name = container_name(target.id);
    let info = match p.docker.inspect_container(&name, None).await {
        Ok(info) => info,
        Err(e) if is_not_found(&e) => return Err(not_running()),
        Err(e) => return Err(backend("inspecting the workspace's container", &e)),
    };
    let status = info.state.as_ref().and_then(|s| s.status);
    if status != Some(ContainerStateStatusEnum::RUNNING) {
        return Err(not_running());
    }
    let workspace_mounted = info
        .mounts
        .unwrap_or_default()
        .iter()
        .any(|m| m.destination.as_deref() == Some(WORKSPACE_DIR));
    Ok(Running {
        name,
        workspace_mounted,
    })
}

fn not_running() -> InsideError {
    InsideError::NotRunning(NOT_RUNNING.to_owned())
}

fn backend(what: &str, e: &DockerError) -> InsideError {
    InsideError::Backend(format!("{what}: {}", daemon_message(e)))
}

// ---------------------------------------------------------------------------------------------
// Paths and the prefix walk

/// What a path is, from the archive stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    /// A device file, FIFO, socket or anything irregular.
    Special,
}

impl Kind {
    fn of_go_mode(mode: u32) -> Kind {
        if mode & GO_MODE_SYMLINK != 0 {
            Kind::Symlink
        } else if mode & GO_MODE_DIR != 0 {
            Kind::Dir
        } else if mode
            & (GO_MODE_DEVICE
                | GO_MODE_NAMED_PIPE
                | GO_MODE_SOCKET
                | GO_MODE_CHAR_DEVICE
                | GO_MODE_IRREGULAR)
            != 0
        {
            Kind::Special
        } else {
            Kind::File
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    kind: Kind,
    size: u64,
}

/// `HEAD …/archive?path=abs`: `None` when nothing is there.
async fn stat(docker: &Docker, container: &str, abs: &str) -> Result<Option<Stat>, InsideError> {
    let options = ContainerArchiveInfoOptionsBuilder::new().path(abs).build();
    match docker
        .get_container_archive_info(container, Some(options))
        .await
    {
        Ok(s) => Ok(Some(Stat {
            kind: Kind::of_go_mode(s.file_mode),
            size: u64::try_from(s.size).unwrap_or(0),
        })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) => Err(not_running()),
        Err(e) => Err(backend(&format!("looking at {abs}"), &e)),
    }
}

/// `root/path` as the container names it.
fn absolute(root: FileRoot, path: &RelPath) -> String {
    if path.is_root() {
        root.as_str().to_owned()
    } else {
        format!("{}/{path}", root.as_str())
    }
}

/// The first `n` components of `path`, as text (`""` for none).
fn prefix(path: &RelPath, n: usize) -> String {
    path.components()[..n].join("/")
}

/// The verdict of the prefix walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walked {
    /// Everything exists; this is the last component (the root for the root itself).
    Exists(Stat),
    /// The root and the first `present` components exist as directories; the next is missing.
    Missing { present: usize },
    /// The first `at` components lead to a regular file, but the path goes on beneath it.
    FileInTheWay { at: usize },
}

/// Stats the root and every prefix of `path` (concurrently) and judges them in order; a link or
/// a special file anywhere is refused, except a link as the last component when `final_link`.
async fn walk(
    docker: &Docker,
    container: &str,
    root: FileRoot,
    path: &RelPath,
    final_link: bool,
) -> Result<Walked, InsideError> {
    let n = path.components().len();
    let probes = (0..=n).map(|i| {
        let abs = if i == 0 {
            root.as_str().to_owned()
        } else {
            format!("{}/{}", root.as_str(), prefix(path, i))
        };
        async move { stat(docker, container, &abs).await }
    });
    // A stat beneath a file fails (the daemon answers 500, "not a directory"), and one beneath
    // a missing component is moot: only the first failure before either counts.
    let stats = futures_util::future::join_all(probes).await;
    judge(root, path, stats, final_link)
}

fn judge(
    root: FileRoot,
    path: &RelPath,
    stats: impl IntoIterator<Item = Result<Option<Stat>, InsideError>>,
    final_link: bool,
) -> Result<Walked, InsideError> {
    let n = path.components().len();
    let rel = |i: usize| {
        if i == 0 {
            root.as_str().to_owned()
        } else {
            prefix(path, i)
        }
    };
    for (i, stat) in stats.into_iter().enumerate() {
        let Some(stat) = stat? else {
            if i == 0 {
                return Err(InsideError::NotFound);
            }
            return Ok(Walked::Missing { present: i - 1 });
        };
        match stat.kind {
            Kind::Symlink if i == n && final_link && i > 0 => {}
            Kind::Symlink => {
                return Err(InsideError::Refused(format!(
                    "path crosses a symbolic link: {}",
                    rel(i)
                )));
            }
            Kind::Special => {
                return Err(InsideError::Refused(format!(
                    "path names a device file, FIFO or socket: {}",
                    rel(i)
                )));
            }
            Kind::File if i < n => return Ok(Walked::FileInTheWay { at: i }),
            Kind::File | Kind::Dir => {}
        }
        if i == n {
            return Ok(Walked::Exists(stat));
        }
    }
    // `stats` has n + 1 entries, so the loop returned.
    Err(InsideError::Backend(
        "the path walk came up short".to_owned(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Reading archives

/// A blocking [`Read`] over a download, for the `tar` crate on a blocking thread: a task pumps
/// the stream into a small channel, so only a few chunks are held at once, and dropping the
/// reader stops the download.
struct ChannelReader {
    chunks: mpsc::Receiver<Result<Vec<u8>, InsideError>>,
    chunk: Vec<u8>,
    pos: usize,
    /// The download's own failure, which wins over the I/O error the tar reader reports.
    failure: Option<InsideError>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    let message = e.to_string();
                    self.failure = Some(e);
                    return Err(std::io::Error::other(message));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Downloads `abs` as a tar and hands it to `parse` on a blocking thread.
async fn read_archive<T, F>(
    docker: &Docker,
    container: &str,
    abs: &str,
    parse: F,
) -> Result<T, InsideError>
where
    T: Send + 'static,
    F: FnOnce(&mut tar::Archive<&mut ChannelReader>) -> Result<T, InsideError> + Send + 'static,
{
    let options = DownloadFromContainerOptionsBuilder::new().path(abs).build();
    let mut stream = Box::pin(docker.download_from_container(container, Some(options)));
    let (tx, rx) = mpsc::channel(4);
    let what = format!("reading {abs}");
    let pump = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let item = item.map(|b| b.to_vec()).map_err(|e| match e {
                e if is_not_found(&e) => InsideError::NotFound,
                e => backend(&what, &e),
            });
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let parsed = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            chunks: rx,
            chunk: Vec::new(),
            pos: 0,
            failure: None,
        };
        let result = parse(&mut tar::Archive::new(&mut reader));
        match (result, reader.failure.take()) {
            (Err(_), Some(failure)) => Err(failure),
            (result, _) => result,
        }
    })
    .await;
    // The parser may stop early (a read stops after one entry): stop the download with it.
    pump.abort();
    parsed.map_err(|e| InsideError::Backend(format!("reading the archive of {abs}: {e}")))?
}

fn tar_error(abs: &str, e: &std::io::Error) -> InsideError {
    InsideError::Backend(format!("reading the archive of {abs}: {e}"))
}

/// The entries of a directory's archive (`<dir name>/…`), relative to the directory, `depth`
/// deep, without what lies beneath [`LISTING_PRUNED_DIRS`], [`LISTING_SKIPPED_FILES`], links,
/// special files and names that are not UTF-8; sorted by path.
fn list_archive<R: Read>(
    archive: &mut tar::Archive<R>,
    depth: usize,
    abs: &str,
) -> Result<Vec<FileEntry>, InsideError> {
    let mut out: Vec<FileEntry> = Vec::new();
    // Archive path → size of the regular files listed, for hard links to them.
    let mut sizes: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for entry in archive.entries().map_err(|e| tar_error(abs, &e))? {
        let entry = entry.map_err(|e| tar_error(abs, &e))?;
        let header = entry.header();
        let Ok(raw) = entry.path() else { continue };
        let Some(raw) = raw.to_str().map(str::to_owned) else {
            continue;
        };
        let components: Vec<&str> = raw
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        // The first component is the listed directory itself.
        let Some((_, rel)) = components.split_first() else {
            continue;
        };
        if rel.is_empty() || rel.len() > depth {
            continue;
        }
        let (name, parents) = rel.split_last().unwrap_or((&"", &[]));
        if parents.iter().any(|p| LISTING_PRUNED_DIRS.contains(p))
            || LISTING_SKIPPED_FILES.contains(name)
        {
            continue;
        }
        let modified = header
            .mtime()
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let kind = header.entry_type();
        let (dir, size) = if kind.is_dir() {
            (true, 0)
        } else if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
            let size = entry.size();
            sizes.insert(components.join("/"), size);
            (false, size)
        } else if kind.is_hard_link() {
            let target = entry.link_name().ok().flatten().and_then(|t| {
                t.to_str().map(|t| {
                    t.split('/')
                        .filter(|c| !c.is_empty())
                        .collect::<Vec<_>>()
                        .join("/")
                })
            });
            (
                false,
                target.and_then(|t| sizes.get(&t).copied()).unwrap_or(0),
            )
        } else {
            // Symbolic links, devices, FIFOs and anything else.
            continue;
        };
        out.push(FileEntry {
            path: rel.join("/"),
            size,
            dir,
            modified,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Files

#[tracing::instrument(skip_all, fields(workspace.id = %target.id, %root, path = %dir))]
pub(super) async fn list_files(
    p: &DockerProvisioner,
    target: &Target,
    root: FileRoot,
    dir: &RelPath,
    depth: u8,
) -> Result<Vec<FileEntry>, InsideError> {
    let container = running(p, target).await?.name;
    match walk(&p.docker, &container, root, dir, false).await? {
        Walked::Exists(Stat {
            kind: Kind::Dir, ..
        }) => {}
        Walked::Exists(_) => return Err(InsideError::Refused("not a directory".to_owned())),
        Walked::Missing { .. } | Walked::FileInTheWay { .. } => return Err(InsideError::NotFound),
    }
    let abs = absolute(root, dir);
    let depth = usize::from(depth.clamp(1, MAX_LIST_DEPTH));
    let what = abs.clone();
    read_archive(&p.docker, &container, &abs, move |archive| {
        list_archive(archive, depth, &what)
    })
    .await
}

#[tracing::instrument(skip_all, fields(workspace.id = %target.id, %root, path = %path))]
pub(super) async fn read_file(
    p: &DockerProvisioner,
    target: &Target,
    root: FileRoot,
    path: &RelPath,
    limit: u64,
) -> Result<Vec<u8>, InsideError> {
    let container = running(p, target).await?.name;
    match walk(&p.docker, &container, root, path, false).await? {
        Walked::Exists(Stat {
            kind: Kind::Dir, ..
        }) => return Err(InsideError::Refused("path is a directory".to_owned())),
        Walked::Exists(Stat { size, .. }) if size > limit => {
            return Err(InsideError::TooLarge { size, limit });
        }
        Walked::Exists(_) => {}
        Walked::Missing { .. } | Walked::FileInTheWay { .. } => return Err(InsideError::NotFound),
    }
    let abs = absolute(root, path);
    let what = abs.clone();
    read_archive(&p.docker, &container, &abs, move |archive| {
        let mut entries = archive.entries().map_err(|e| tar_error(&what, &e))?;
        let Some(entry) = entries.next() else {
            return Err(InsideError::NotFound);
        };
        let entry = entry.map_err(|e| tar_error(&what, &e))?;
        let kind = entry.header().entry_type();
        // Changed since the walk looked.
        if kind.is_dir() {
            return Err(InsideError::Refused("path is a directory".to_owned()));
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            return Err(InsideError::Refused(
                "path is not a regular file".to_owned(),
            ));
        }
        let size = entry.size();
        if size > limit {
            return Err(InsideError::TooLarge { size, limit });
        }
        let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .take(limit.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| tar_error(&what, &e))?;
        Ok(content)
    })
    .await
}

/// One file of a write, once its path was checked.
struct Planned {
    rel: String,
    /// The name it is uploaded under (the temporary sibling, or the final name).
    upload: String,
    content: Vec<u8>,
}

#[tracing::instrument(skip_all, fields(workspace.id = %target.id, %root, files = files.len()))]
pub(super) async fn write_files(
    p: &DockerProvisioner,
    target: &Target,
    root: FileRoot,
    files: Vec<(RelPath, Vec<u8>)>,
) -> Result<(), InsideError> {
    if files.is_empty() {
        return Ok(());
    }
    let container = running(p, target).await?.name;
    check_batch(&files)?;

    // Every path is checked before anything is written.
    let mut missing_dirs: BTreeSet<String> = BTreeSet::new();
    let mut walks = Vec::with_capacity(files.len());
    for chunk in files.chunks(WALKS_AT_ONCE) {
        let checks = chunk
            .iter()
            .map(|(path, _)| walk(&p.docker, &container, root, path, false));
        walks.extend(futures_util::future::join_all(checks).await);
    }
    for ((path, _), walked) in files.iter().zip(walks) {
        match walked? {
            Walked::Exists(Stat {
                kind: Kind::Dir, ..
            }) => {
                return Err(InsideError::Refused(format!("path is a directory: {path}")));
            }
            Walked::Exists(_) => {}
            Walked::Missing { present } => {
                let n = path.components().len();
                missing_dirs.extend((present + 1..n).map(|i| prefix(path, i)));
            }
            Walked::FileInTheWay { at } => {
                return Err(InsideError::Refused(format!(
                    "a parent of {path} is a file: {}",
                    prefix(path, at)
                )));
            }
        }
    }

    let mv = find_mv(&p.docker, &container).await?;
    if mv.is_none() {
        tracing::debug!(
            container = %container,
            "the workspace image has no mv: files are written in place, not atomically"
        );
    }
    let planned: Vec<Planned> = files
        .into_iter()
        .map(|(path, content)| {
            let rel = path.to_string();
            let upload = match (&mv, path.file_name()) {
                (Some(_), Some(name)) => {
                    let tmp = temporary_name(name);
                    if path.parent().is_root() {
                        tmp
                    } else {
                        format!("{}/{tmp}", path.parent())
                    }
                }
                _ => rel.clone(),
            };
            Planned {
                rel,
                upload,
                content,
            }
        })
        .collect();

    let archive = write_archive(
        &missing_dirs,
        planned.iter().map(|f| (&f.upload, &f.content)),
    )?;
    upload(&p.docker, &container, root, archive).await?;
    let Some(mv) = mv else {
        return Ok(());
    };

    // With a shell, each batch of files is renamed by one exec instead of one exec per file.
    let shell = planned.len() > 1 && stat(&p.docker, &container, SH).await?.is_some();
    let mut i = 0;
    while i < planned.len() {
        if shell {
            let batch = &planned[i..planned.len().min(i + RENAME_BATCH)];
            let done = rename_all(&p.docker, &container, root, mv, batch).await;
            i += done;
            if done == batch.len() {
                continue;
            }
        }
        rename_or_rewrite(&p.docker, &container, root, mv, &planned[i..]).await?;
        i += 1;
    }
    Ok(())
}

/// Renames the files of `batch` in order with one `sh` exec running `mv` for each; returns how
/// many were renamed before the first failure (0 when the exec itself failed).
async fn rename_all(
    docker: &Docker,
    container: &str,
    root: FileRoot,
    mv: &str,
    batch: &[Planned],
) -> usize {
    let mut argv = [SH, "-c", RENAME_ALL, "sh", mv].map(str::to_owned).to_vec();
    for file in batch {
        argv.push(format!("{root}/{}", file.upload));
        argv.push(format!("{root}/{}", file.rel));
    }
    match run_helper(docker, container, argv, None).await {
        Ok(ran) => String::from_utf8_lossy(&ran.stdout)
            .trim()
            .parse::<usize>()
            .map_or(0, |done| done.min(batch.len())),
        Err(_) => 0,
    }
}

/// Renames the first file of `rest` into place; when that fails, uploads it under its final
/// name instead (see the module docs) and removes its temporary file. When that fails too, the
/// temporary files of `rest` are removed and the write stops.
async fn rename_or_rewrite(
    docker: &Docker,
    container: &str,
    root: FileRoot,
    mv: &str,
    rest: &[Planned],
) -> Result<(), InsideError> {
    let Some(file) = rest.first() else {
        return Ok(());
    };
    let tmp = format!("{root}/{}", file.upload);
    let dest = format!("{root}/{}", file.rel);
    let argv = [mv, "-f", "-T", "--", &tmp, &dest]
        .map(str::to_owned)
        .to_vec();
    let why = match run_helper(docker, container, argv, None).await {
        Ok(ran) if ran.code == Some(0) => return Ok(()),
        Ok(ran) => format!(
            "exit code {:?}: {}",
            ran.code,
            String::from_utf8_lossy(&ran.stderr).trim()
        ),
        Err(e) => e.to_string(),
    };
    tracing::debug!(
        container,
        path = %dest,
        reason = %why,
        "renaming a written file into place failed; writing it in place instead"
    );
    let direct = write_archive(&BTreeSet::new(), [(&file.rel, &file.content)])?;
    let written = upload(docker, container, root, direct).await;
    let leftovers: Vec<String> = match written {
        Ok(()) => vec![tmp],
        // The first failure stops the rest: their temporary files go as well.
        Err(_) => rest
            .iter()
            .map(|f| format!("{root}/{}", f.upload))
            .collect(),
    };
    remove_leftovers(docker, container, leftovers).await;
    written
}

/// Refuses a write whose paths clash: the root itself, or one file beneath another.
fn check_batch(files: &[(RelPath, Vec<u8>)]) -> Result<(), InsideError> {
    let paths: BTreeSet<&[String]> = files.iter().map(|(p, _)| p.components()).collect();
    for (path, _) in files {
        if path.is_root() {
            return Err(InsideError::Refused(
                "path names the root directory".to_owned(),
            ));
        }
        let n = path.components().len();
        if let Some(i) = (1..n).find(|i| paths.contains(&path.components()[..*i])) {
            return Err(InsideError::Refused(format!(
                "{} is both a file and a directory in one write",
                prefix(path, i)
            )));
        }
    }
    Ok(())
}

/// `.<name>.berth-tmp-<16 hex>`, with a long name shortened (at a character boundary).
fn temporary_name(name: &str) -> String {
    let mut keep = name.len().min(TMP_NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut random = [0u8; 8];
    // Without the OS's randomness the time is unique enough for a name nobody else picks.
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        random = (nanos as u64).to_le_bytes();
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!(".{}.berth-tmp-{hex}", &name[..keep])
}

/// The tar of a write: the missing directories (0755), then the files (0644), all 1000:1000.
fn write_archive<'a>(
    dirs: &BTreeSet<String>,
    files: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>,
) -> Result<Vec<u8>, InsideError> {
    super::agent_tar(
        dirs,
        files.into_iter().map(|(path, content)| {
            (
                std::path::Path::new(path.as_str()),
                content.as_slice(),
                0o644,
            )
        }),
    )
    .map_err(|e| InsideError::Backend(format!("building the archive: {e}")))
}

/// Unpacks `archive` into the root directory; replacing a directory with a file (or the other
/// way round) is an error rather than done.
async fn upload(
    docker: &Docker,
    container: &str,
    root: FileRoot,
    archive: Vec<u8>,
) -> Result<(), InsideError> {
    let options = UploadToContainerOptionsBuilder::new()
        .path(root.as_str())
        .no_overwrite_dir_non_dir("true")
        .build();
    match docker
        .upload_to_container(container, Some(options), body_full(archive.into()))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Err(InsideError::NotFound),
        // Read-only mounts and root file systems, a directory in the way.
        Err(DockerError::DockerResponseServerError {
            status_code: 400 | 403 | 409,
            message,
        }) => Err(InsideError::Refused(message)),
        Err(e) => Err(backend(&format!("writing into {root}"), &e)),
    }
}

/// The `mv` of the image, if it has one.
async fn find_mv(docker: &Docker, container: &str) -> Result<Option<&'static str>, InsideError> {
    for path in MV_PATHS {
        if stat(docker, container, path).await?.is_some() {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Removes temporary files of a failed write: `rm -f` as root, which is safe for names this
/// write chose at random in directories it just checked. Failures are only logged.
async fn remove_leftovers(docker: &Docker, container: &str, paths: Vec<String>) {
    let mut argv = vec!["rm".to_owned(), "-f".to_owned(), "--".to_owned()];
    argv.extend(paths.iter().cloned());
    match run_helper(docker, container, argv, Some("0")).await {
        Ok(ran) if ran.code == Some(0) => {}
        outcome => tracing::warn!(
            container,
            files = ?paths,
            outcome = ?outcome.map(|r| r.code),
            "could not remove the temporary files of a failed write"
        ),
    }
}

#[tracing::instrument(skip_all, fields(workspace.id = %target.id, %root, path = %path))]
pub(super) async fn delete_file(
    p: &DockerProvisioner,
    target: &Target,
    root: FileRoot,
    path: &RelPath,
) -> Result<(), InsideError> {
    if path.is_root() {
        return Err(InsideError::Refused(
            "the root directory cannot be deleted".to_owned(),
        ));
    }
    let container = running(p, target).await?.name;
    match walk(&p.docker, &container, root, path, true).await? {
        Walked::Exists(_) => {}
        Walked::Missing { .. } | Walked::FileInTheWay { .. } => return Err(InsideError::NotFound),
    }
    let abs = absolute(root, path);
    let argv = ["rm", "-rf", "--", &abs].map(str::to_owned).to_vec();
    let ran = run_helper(&p.docker, &container, argv, None).await?;
    match ran.code {
        Some(0) => Ok(()),
        Some(126 | 127) => Err(InsideError::Refused(
            "the workspace image has no rm, which deleting needs".to_owned(),
        )),
        code => Err(InsideError::Backend(format!(
            "deleting {path} failed (exit code {code:?}): {}",
            String::from_utf8_lossy(&ran.stderr).trim()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Execs

/// What a helper exec did.
#[derive(Debug)]
struct Ran {
    code: Option<i64>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn create_exec_error(e: &DockerError) -> InsideError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        } => not_running(),
        e => backend("creating an exec in the workspace's container", e),
    }
}

/// Runs `argv` (no shell, no stdin) as `user` (`None`: the image's default user), bounded in
/// time and output.
async fn run_helper(
    docker: &Docker,
    container: &str,
    argv: Vec<String>,
    user: Option<&str>,
) -> Result<Ran, InsideError> {
    let config = CreateExecOptions {
        cmd: Some(argv),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        user: user.map(str::to_owned),
        ..Default::default()
    };
    let run = async {
        let id = docker
            .create_exec(container, config)
            .await
            .map_err(|e| create_exec_error(&e))?
            .id;
        let started = docker
            .start_exec(&id, None::<StartExecOptions>)
            .await
            .map_err(|e| backend("starting an exec", &e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(item) = output.next().await {
                let (into, message) = match item {
                    Ok(LogOutput::StdErr { message }) => (&mut stderr, message),
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        (&mut stdout, message)
                    }
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(_) => break,
                };
                let room = HELPER_OUTPUT.saturating_sub(into.len());
                into.extend_from_slice(&message[..message.len().min(room)]);
            }
        }
        Ok(Ran {
            code: exit_code(docker, &id).await,
            stdout,
            stderr,
        })
    };
    tokio::time::timeout(HELPER_TIMEOUT, run)
        .await
        .map_err(|_| InsideError::Backend(format!("a helper exec took over {HELPER_TIMEOUT:?}")))?
}

/// The exit code of an exec whose output ended, once the runtime reaped it.
async fn exit_code(docker: &Docker, exec_id: &str) -> Option<i64> {
    for _ in 0..EXIT_POLLS {
        match docker.inspect_exec(exec_id).await {
            Ok(info) if info.running != Some(true) => return info.exit_code,
            Ok(_) => tokio::time::sleep(EXIT_POLL).await,
            Err(_) => return None,
        }
    }
    None
}

/// Kills the session `pid` inside the container (see [`KILL_SESSION`]) as the default user.
async fn kill_session(docker: &Docker, container: &str, pid: u32) {
    let argv = [SH, "-c", KILL_SESSION, "sh", &pid.to_string()]
        .map(str::to_owned)
        .to_vec();
    match run_helper(docker, container, argv, None).await {
        Ok(ran) if ran.code == Some(0) => {
            tracing::debug!(container, pid, "killed the session");
        }
        outcome => tracing::warn!(
            container,
            pid,
            outcome = ?outcome.map(|r| r.code),
            "could not kill a session inside the workspace"
        ),
    }
}

/// Kills the session of an exec whose caller went away before it finished.
struct KillOnDrop {
    docker: Docker,
    container: String,
    pid: Option<u32>,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (Some(pid), Ok(runtime)) = (self.pid, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let docker = self.docker.clone();
        let container = std::mem::take(&mut self.container);
        runtime.spawn(async move { kill_session(&docker, &container, pid).await });
    }
}

/// Strips the `berth-pid:<n>` line from the start of a stream.
#[derive(Debug, Default)]
struct Marker {
    buf: Vec<u8>,
    done: bool,
    pid: Option<u32>,
}

impl Marker {
    /// Feeds bytes; returns what follows the marker line once it is complete (or everything, if
    /// the first line is not a marker).
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.done {
            return bytes.to_vec();
        }
        self.buf.extend_from_slice(bytes);
        if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            self.done = true;
            let line = String::from_utf8_lossy(&self.buf[..nl]);
            let line = line.trim_end_matches('\r');
            if let Some(pid) = line
                .strip_prefix(PID_MARKER)
                .and_then(|p| p.parse::<u32>().ok())
            {
                self.pid = Some(pid);
                return self.buf.split_off(nl + 1);
            }
            return std::mem::take(&mut self.buf);
        }
        if self.buf.len() > MARKER_MAX {
            self.done = true;
            return std::mem::take(&mut self.buf);
        }
        Vec::new()
    }
}

/// Bounded stdout and stderr.
struct Collected {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl Collected {
    fn push(limit: usize, into: &mut Vec<u8>, truncated: &mut bool, bytes: &[u8]) {
        let room = limit.saturating_sub(into.len());
        if bytes.len() > room {
            *truncated = true;
        }
        into.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn stdout(&mut self, bytes: &[u8]) {
        Self::push(self.limit, &mut self.stdout, &mut self.truncated, bytes);
    }

    fn stderr(&mut self, bytes: &[u8]) {
        Self::push(self.limit, &mut self.stderr, &mut self.truncated, bytes);
    }
}

/// Checks the working directory (or picks the default) and that the image has a shell.
async fn exec_setup(
    docker: &Docker,
    running: &Running,
    cwd: Option<&str>,
) -> Result<String, InsideError> {
    let cwd = match cwd {
        Some(cwd) if !cwd.starts_with('/') => {
            return Err(InsideError::Refused(format!(
                "the working directory {cwd:?} is not an absolute path"
            )));
        }
        Some(cwd) if cwd.contains('\0') => {
            return Err(InsideError::Refused(
                "the working directory contains a NUL byte".to_owned(),
            ));
        }
        Some(cwd) => cwd.to_owned(),
        None => running.default_cwd().to_owned(),
    };
    let (shell, dir) = tokio::try_join!(
        stat(docker, &running.name, SH),
        stat(docker, &running.name, &cwd)
    )?;
    if shell.is_none() {
        return Err(InsideError::Refused(NO_SHELL.to_owned()));
    }
    match dir.map(|s| s.kind) {
        None => Err(InsideError::Refused(format!(
            "the working directory {cwd} does not exist"
        ))),
        // A link is the container's business: the runtime follows it inside the container.
        Some(Kind::Dir | Kind::Symlink) => Ok(cwd),
        Some(_) => Err(InsideError::Refused(format!(
            "the working directory {cwd} is not a directory"
        ))),
    }
}

/// The error of an exec whose wrapper never printed its pid (it could not start).
async fn did_not_start(docker: &Docker, exec_id: &str, said: &[u8]) -> InsideError {
    let said = String::from_utf8_lossy(said).trim().to_owned();
    match exit_code(docker, exec_id).await {
        Some(126 | 127) if said.contains(SH) => InsideError::Refused(NO_SHELL.to_owned()),
        code => InsideError::Backend(format!(
            "the command could not be started in the workspace (exit code {code:?}): {said}"
        )),
    }
}

#[tracing::instrument(skip_all, fields(workspace.id = %target.id, cmd = ?request.cmd.first()))]
pub(super) async fn exec(
    p: &DockerProvisioner,
    target: &Target,
    request: ExecRequest,
) -> Result<ExecOutput, InsideError> {
    if request.cmd.is_empty() {
        return Err(InsideError::Refused("no command to run".to_owned()));
    }
    if request.cmd.iter().any(|a| a.contains('\0')) {
        return Err(InsideError::Refused(
            "the command contains a NUL byte".to_owned(),
        ));
    }
    let mut env = Vec::with_capacity(request.env.len());
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(InsideError::Refused(format!(
                "invalid environment variable {key:?}"
            )));
        }
        env.push(format!("{key}={value}"));
    }
    let running = running(p, target).await?;
    let cwd = exec_setup(&p.docker, &running, request.cwd.as_deref()).await?;
    let deadline = tokio::time::Instant::now() + request.timeout;

    let mut cmd = vec![
        SH.to_owned(),
        "-c".to_owned(),
        EXEC_WRAPPER.to_owned(),
        "sh".to_owned(),
    ];
    cmd.extend(request.cmd);
    let config = CreateExecOptions {
        cmd: Some(cmd),
        env: Some(env),
        working_dir: Some(cwd),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        ..Default::default()
    };
    let exec_id = p
        .docker
        .create_exec(&running.name, config)
        .await
        .map_err(|e| create_exec_error(&e))?
        .id;
    let started = p
        .docker
        .start_exec(&exec_id, None::<StartExecOptions>)
        .await
        .map_err(|e| backend("starting the command", &e))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(InsideError::Backend(
            "the daemon did not attach to the command".to_owned(),
        ));
    };
    let mut guard = KillOnDrop {
        docker: p.docker.clone(),
        container: running.name.clone(),
        pid: None,
        armed: true,
    };

    // Standard input is written while the output is read (a command may not read all of it
    // before it writes), then closed (a half-close the daemon passes on as EOF).
    let stdin = request.stdin;
    let mut feed = Box::pin(async move {
        let mut input = input;
        let _ = input.write_all(&stdin).await;
        let _ = input.shutdown().await;
    });
    let mut fed = false;

    let mut marker = Marker::default();
    let mut collected = Collected {
        limit: request.output_limit,
        stdout: Vec::new(),
        stderr: Vec::new(),
        truncated: false,
    };
    let mut timed_out = false;
    let mut killed = false;
    let mut until = deadline;
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(LogOutput::StdErr { message })) => collected.stderr(&message),
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    let was = marker.pid;
                    let rest = marker.feed(&message);
                    collected.stdout(&rest);
                    guard.pid = marker.pid;
                    // A timeout that came before the pid: kill as soon as it is known.
                    if timed_out
                        && !killed
                        && was.is_none()
                        && let Some(pid) = marker.pid
                    {
                        kill_session(&p.docker, &running.name, pid).await;
                        killed = true;
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    return Err(backend("reading the command's output", &e));
                }
                None => break,
            },
            () = &mut feed, if !fed => fed = true,
            () = tokio::time::sleep_until(until) => {
                if timed_out {
                    // The output did not end within the grace after the kill: give up on it.
                    break;
                }
                timed_out = true;
                if let Some(pid) = marker.pid {
                    kill_session(&p.docker, &running.name, pid).await;
                    killed = true;
                }
                until = tokio::time::Instant::now() + KILL_GRACE;
            }
        }
    }
    drop(output);
    if !marker.done && !timed_out {
        guard.armed = false;
        let mut said = marker.buf.clone();
        said.extend_from_slice(&collected.stderr);
        return Err(did_not_start(&p.docker, &exec_id, &said).await);
    }
    if !marker.done {
        // Whatever came was output, not a marker.
        let rest = std::mem::take(&mut marker.buf);
        collected.stdout(&rest);
    }
    guard.armed = timed_out && !killed;
    let exit_code = if timed_out {
        None
    } else {
        exit_code(&p.docker, &exec_id).await
    };
    Ok(ExecOutput {
        exit_code,
        stdout: collected.stdout,
        stderr: collected.stderr,
        truncated: collected.truncated,
        timed_out,
    })
}

// ---------------------------------------------------------------------------------------------
// Terminals

/// `POST /exec/{id}/start` with a TTY, upgraded to the raw stream by hand (see the module docs
/// for why not bollard's `start_exec`). Returns the stream and any bytes read past the headers.
async fn attach_tty(
    p: &DockerProvisioner,
    exec_id: &str,
) -> Result<(UnixStream, Vec<u8>), InsideError> {
    let socket = p.config.socket.trim_start_matches("unix://");
    let failed = |e: &dyn std::fmt::Display| {
        InsideError::Backend(format!("attaching to the terminal through {socket}: {e}"))
    };
    let mut stream = UnixStream::connect(socket).await.map_err(|e| failed(&e))?;
    let body = r#"{"Detach":false,"Tty":true}"#;
    let request = format!(
        "POST /v{}/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n\
         Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        p.docker.client_version(),
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(&e))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if head.len() > 64 * 1024 {
            return Err(failed(&"the daemon's answer has no end of headers"));
        }
        let n = stream.read(&mut buf).await.map_err(|e| failed(&e))?;
        if n == 0 {
            return Err(failed(&"the daemon closed the connection"));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let rest = head.split_off(end + 4);
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "101" | "200" => Ok((stream, rest)),
        "404" | "409" => Err(not_running()),
        _ => Err(failed(&format!(
            "{} {}",
            head.lines().next().unwrap_or(""),
            String::from_utf8_lossy(&rest).trim()
        ))),
    }
}

#[tracing::instrument(skip_all, fields(workspace.id = %target.id))]
pub(super) async fn open_terminal(
    p: &DockerProvisioner,
    target: &Target,
    size: TermSize,
) -> Result<Terminal, InsideError> {
    let running = running(p, target).await?;
    let cwd = exec_setup(&p.docker, &running, None).await?;
    let config = CreateExecOptions {
        cmd: Some(vec![
            SH.to_owned(),
            "-c".to_owned(),
            TERMINAL_WRAPPER.to_owned(),
        ]),
        env: Some(vec!["TERM=xterm-256color".to_owned()]),
        working_dir: Some(cwd),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        ..Default::default()
    };
    let exec_id = p
        .docker
        .create_exec(&running.name, config)
        .await
        .map_err(|e| create_exec_error(&e))?
        .id;
    let (mut stream, early) = attach_tty(p, &exec_id).await?;

    // The pid line comes first; nothing is written before it, so no echo can precede it.
    let mut marker = Marker::default();
    let mut initial = marker.feed(&early);
    let mut buf = vec![0u8; TERMINAL_CHUNK];
    let read_marker = async {
        while !marker.done {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            initial = marker.feed(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let read = tokio::time::timeout(MARKER_TIMEOUT, read_marker).await;
    let Some(pid) = marker.pid else {
        let said = if marker.done {
            initial
        } else {
            marker.buf.clone()
        };
        return Err(match read {
            Err(_) => InsideError::Backend(format!(
                "the terminal did not start within {MARKER_TIMEOUT:?}"
            )),
            Ok(Err(e)) => InsideError::Backend(format!("reading the terminal: {e}")),
            Ok(Ok(())) => did_not_start(&p.docker, &exec_id, &said).await,
        });
    };
    let session = Session {
        docker: p.docker.clone(),
        container: running.name,
        exec_id,
        pid,
    };
    session.resize(size).await;

    let (input_tx, input_rx) = mpsc::channel(64);
    let (output_tx, output_rx) = mpsc::channel(64);
    let (exit_tx, exit_rx) = oneshot::channel();
    tokio::spawn(session.pump(stream, initial, input_rx, output_tx, exit_tx));
    Ok(Terminal {
        input: input_tx,
        output: output_rx,
        exit: exit_rx,
    })
}

/// A running terminal inside a container.
struct Session {
    docker: Docker,
    container: String,
    exec_id: String,
    /// The shell's pid inside the container, which leads its session.
    pid: u32,
}

impl Session {
    async fn resize(&self, size: TermSize) {
        let options = ResizeExecOptionsBuilder::new()
            .h(i32::from(size.rows))
            .w(i32::from(size.cols))
            .build();
        if let Err(e) = self.docker.resize_exec(&self.exec_id, options).await {
            tracing::debug!(container = %self.container, error = %e, "resizing a terminal failed");
        }
    }

    /// Moves output to the client and input to the shell until the shell exits (the output
    /// ends, `exit` gets the code) or the client drops its input (the session is killed).
    async fn pump(
        self,
        stream: UnixStream,
        initial: Vec<u8>,
        mut input: mpsc::Receiver<TerminalInput>,
        output: mpsc::Sender<Vec<u8>>,
        exit: oneshot::Sender<Option<i64>>,
    ) {
        let (mut reader, mut writer) = stream.into_split();
        let mut pending: VecDeque<Vec<u8>> =
            initial.chunks(TERMINAL_CHUNK).map(<[u8]>::to_vec).collect();
        let mut forward = true;
        let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
        let mut queued_bytes = 0usize;
        let mut written = 0usize;
        let mut buf = vec![0u8; TERMINAL_CHUNK];
        let mut poll = tokio::time::interval(TERMINAL_CLOSED_POLL);
        let client_gone = loop {
            let throttled = queued_bytes >= TERMINAL_INPUT_QUEUE;
            tokio::select! {
                permit = output.reserve(), if !pending.is_empty() => match permit {
                    Ok(permit) => permit.send(pending.pop_front().unwrap_or_default()),
                    // Nobody reads the output any more: the session lives on (its input
                    // decides), the output is dropped.
                    Err(_) => {
                        forward = false;
                        pending.clear();
                    }
                },
                read = reader.read(&mut buf), if pending.len() < TERMINAL_AHEAD => match read {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => {
                        if forward {
                            pending.push_back(buf[..n].to_vec());
                        }
                    }
                },
                message = input.recv(), if !throttled => match message {
                    None => break true,
                    Some(TerminalInput::Data(data)) => {
                        if !data.is_empty() {
                            queued_bytes += data.len();
                            queued.push_back(data);
                        }
                    }
                    Some(TerminalInput::Resize(size)) => self.resize(size).await,
                },
                wrote = writer.write(queued.front().map_or(&[][..], |d| &d[written..])),
                    if !queued.is_empty() => match wrote {
                    Ok(n) => {
                        written += n;
                        queued_bytes -= n;
                        if queued.front().is_some_and(|d| written >= d.len()) {
                            queued.pop_front();
                            written = 0;
                        }
                    }
                    // The shell's side is gone; its output will end too.
                    Err(_) => {
                        queued.clear();
                        queued_bytes = 0;
                        written = 0;
                    }
                },
                _ = poll.tick(), if throttled => {
                    if input.is_closed() && input.is_empty() {
                        break true;
                    }
                }
            }
        };
        if client_gone {
            kill_session(&self.docker, &self.container, self.pid).await;
            // Closes the attach connection.
            drop((reader, writer));
            let _ = exit.send(None);
            return;
        }
        drop(writer);
        let code = exit_code(&self.docker, &self.exec_id).await;
        let _ = exit.send(code);
        for chunk in pending {
            if output.send(chunk).await.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn st(kind: Kind) -> Option<Stat> {
        Some(Stat { kind, size: 3 })
    }

    fn judge(
        root: FileRoot,
        path: &RelPath,
        stats: &[Option<Stat>],
        final_link: bool,
    ) -> Result<Walked, InsideError> {
        super::judge(root, path, stats.iter().copied().map(Ok), final_link)
    }

    #[test]
    fn go_file_modes_become_kinds() {
        assert_eq!(Kind::of_go_mode(GO_MODE_DIR | 0o755), Kind::Dir);
        assert_eq!(Kind::of_go_mode(0o644), Kind::File);
        assert_eq!(Kind::of_go_mode(GO_MODE_SYMLINK | 0o777), Kind::Symlink);
        assert_eq!(Kind::of_go_mode(GO_MODE_NAMED_PIPE | 0o644), Kind::Special);
        assert_eq!(
            Kind::of_go_mode(GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE | 0o666),
            Kind::Special
        );
        assert_eq!(Kind::of_go_mode(GO_MODE_SOCKET | 0o755), Kind::Special);
    }

    #[test]
    fn the_walk_refuses_links_and_devices_and_finds_what_is_missing() {
        let root = FileRoot::Workspace;
        let p = rel("a/b/c");
        let dir = st(Kind::Dir);
        assert_eq!(
            judge(root, &p, &[dir, dir, dir, st(Kind::File)], false).unwrap(),
            Walked::Exists(Stat {
                kind: Kind::File,
                size: 3
            })
        );
        assert_eq!(
            judge(root, &p, &[dir, dir, None, None], false).unwrap(),
            Walked::Missing { present: 1 }
        );
        assert_eq!(
            judge(root, &p, &[dir, st(Kind::File), None, None], false).unwrap(),
            Walked::FileInTheWay { at: 1 }
        );
        assert_eq!(
            judge(root, &p, &[None, None, None, None], false).unwrap_err(),
            InsideError::NotFound
        );
        assert_eq!(
            judge(root, &p, &[dir, st(Kind::Symlink), dir, dir], false).unwrap_err(),
            InsideError::Refused("path crosses a symbolic link: a".into())
        );
        assert_eq!(
            judge(root, &p, &[st(Kind::Symlink), dir, dir, dir], false).unwrap_err(),
            InsideError::Refused("path crosses a symbolic link: /workspace".into())
        );
        assert_eq!(
            judge(root, &p, &[dir, dir, dir, st(Kind::Special)], false).unwrap_err(),
            InsideError::Refused("path names a device file, FIFO or socket: a/b/c".into())
        );
        // Only a delete may name a link itself, and only as the last component.
        assert!(judge(root, &p, &[dir, dir, dir, st(Kind::Symlink)], false).is_err());
        assert!(judge(root, &p, &[dir, dir, dir, st(Kind::Symlink)], true).is_ok());
        assert!(judge(root, &p, &[dir, dir, st(Kind::Symlink), dir], true).is_err());
        assert_eq!(
            judge(root, &RelPath::root(), &[dir], false).unwrap(),
            Walked::Exists(dir.unwrap())
        );
        // A failure beneath a file does not count; one on the way does.
        let failed = || Err(InsideError::Backend("500".into()));
        assert_eq!(
            super::judge(
                root,
                &p,
                [Ok(dir), Ok(st(Kind::File)), failed(), failed()],
                false
            ),
            Ok(Walked::FileInTheWay { at: 1 })
        );
        assert!(super::judge(root, &p, [Ok(dir), failed(), Ok(None), Ok(None)], false).is_err());
    }

    #[test]
    fn the_pid_marker_is_stripped_even_when_split() {
        let mut m = Marker::default();
        assert_eq!(m.feed(b"berth-p"), b"");
        assert_eq!(m.feed(b"id:42\r\nhello"), b"hello");
        assert_eq!(m.pid, Some(42));
        assert_eq!(m.feed(b" world"), b" world");

        let mut m = Marker::default();
        assert_eq!(m.feed(b"not a marker\nrest"), b"not a marker\nrest");
        assert_eq!(m.pid, None);

        let mut m = Marker::default();
        assert_eq!(m.feed(&[b'x'; 70]), vec![b'x'; 70]);
        assert!(m.done && m.pid.is_none());
    }

    #[test]
    fn output_is_cut_at_the_limit_per_stream() {
        let mut c = Collected {
            limit: 4,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        };
        c.stdout(b"abc");
        c.stderr(b"wxyz");
        assert!(!c.truncated);
        c.stdout(b"de");
        assert_eq!((c.stdout.as_slice(), c.truncated), (&b"abcd"[..], true));
        assert_eq!(c.stderr, b"wxyz");
    }

    #[test]
    fn temporary_names_are_hidden_siblings_and_short_enough() {
        let name = temporary_name("notes.md");
        assert!(name.starts_with(".notes.md.berth-tmp-"), "{name}");
        assert_eq!(name.len(), ".notes.md.berth-tmp-".len() + 16);
        assert_ne!(temporary_name("notes.md"), name);
        let long = "é".repeat(200);
        assert!(temporary_name(&long).len() <= 255);
    }

    #[test]
    fn a_batch_cannot_hold_a_file_and_its_parent() {
        let files = |paths: &[&str]| -> Vec<(RelPath, Vec<u8>)> {
            paths.iter().map(|p| (rel(p), Vec::new())).collect()
        };
        assert!(check_batch(&files(&["a/b", "a/c", "d"])).is_ok());
        assert_eq!(
            check_batch(&files(&["a", "a/b"])).unwrap_err(),
            InsideError::Refused("a is both a file and a directory in one write".into())
        );
        assert!(check_batch(&files(&[""])).is_err());
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            } else {
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn listings_come_from_tar_headers() {
        use tar::EntryType as T;
        let bytes = tar_of(&[
            ("ws/", T::Directory, b""),
            ("ws/a.txt", T::Regular, b"hello"),
            ("ws/.DS_Store", T::Regular, b"x"),
            ("ws/link", T::Symlink, b"/etc"),
            ("ws/fifo", T::Fifo, b""),
            ("ws/hard", T::Link, b"ws/a.txt"),
            ("ws/.git/", T::Directory, b""),
            ("ws/.git/HEAD", T::Regular, b"ref"),
            ("ws/sub/", T::Directory, b""),
            ("ws/sub/b", T::Regular, b"bb"),
            ("ws/sub/deeper/", T::Directory, b""),
            ("ws/sub/deeper/c", T::Regular, b"c"),
        ]);
        let list = |depth| {
            list_archive(&mut tar::Archive::new(bytes.as_slice()), depth, "/ws")
                .unwrap()
                .into_iter()
                .map(|e| (e.path, e.size, e.dir))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(1),
            [
                (".git".into(), 0, true),
                ("a.txt".into(), 5, false),
                ("hard".into(), 5, false),
                ("sub".into(), 0, true),
            ]
        );
        let deep: Vec<String> = list(5).into_iter().map(|e| e.0).collect();
        assert_eq!(
            deep,
            [
                ".git",
                "a.txt",
                "hard",
                "sub",
                "sub/b",
                "sub/deeper",
                "sub/deeper/c"
            ]
        );
        let entries = list_archive(&mut tar::Archive::new(bytes.as_slice()), 1, "/ws").unwrap();
        assert_eq!(
            entries[1].modified,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}

//! Looking inside a process workspace: its files, one-shot commands and a terminal (the
//! [`Provisioner`](crate::Provisioner) methods `list_files` … `open_terminal`; the contract is in
//! [`crate::inside`]).
//!
//! The roots are host directories: `/configs` is `<root>/<uuid>/configs`, `/workspace` the shared
//! host directory (`workspace_dir`) or `<root>/<uuid>/workspace`. `/home` and `/plugins` do not
//! exist here: the agent runs on the host, as the server's user. The files stay readable after
//! the agent stopped; a workspace whose directory is gone (never started, purged) has none.
//!
//! # Staying beneath the root
//!
//! The agent can plant symbolic links anywhere under its roots (it runs as the server's user), so
//! no path of a request is ever resolved through one. A path is opened with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` from a descriptor of the root;
//! on a kernel without it (before 5.6, or a seccomp filter that refuses it) by a walk that opens
//! one component at a time with `O_NOFOLLOW`. Everything after that works on descriptors
//! (`fstatat`, `openat`, `mkdirat`, `renameat`, `unlinkat` relative to the parent directory, with
//! `AT_SYMLINK_NOFOLLOW`/`O_NOFOLLOW`), so swapping a directory for a link between two steps
//! cannot redirect a step either. The last component is looked at before it is opened, so device
//! files, FIFOs and sockets are refused without being opened (a FIFO would block the reader).
//! The root itself (`<uuid>/configs`) is also opened beneath the provisioner's root without
//! following links; the provisioner's root and a shared `workspace_dir` are the operator's and are
//! followed as configured.
//!
//! # Commands and terminals
//!
//! A command or a shell runs on the host, as the server's user, in the workspace directory, with
//! the agent's environment rules: the server's own environment is cleared except
//! `INHERITED_VARS`, plus `WORKSPACE_ID` and `WORKSPACE_CONFIG_PATH`. Its working directory is
//! resolved like a file path and entered through `/proc/self/fd/<n>` of the opened directory, so
//! it is the directory that was checked. A command leads its own process group, which is killed
//! when it exits or times out, so nothing it started in the background outlives the exec nor
//! keeps its output pipes open.
//!
//! **A terminal is a shell on the host** with the server's user's rights, not a shell inside an
//! isolated workspace: the HTTP layer offers it only behind an operator flag. The shell (`$SHELL`
//! of the server when it is an executable, else `/bin/bash`, else `/bin/sh`, run with `-i`) gets
//! a fresh PTY as its controlling terminal in a session of its own, so job control, `stty size`
//! and `SIGWINCH` work. The session is made by `setsid -c` (util-linux or busybox): the crate
//! forbids `unsafe`, which a `pre_exec` hook calling `setsid()` and `TIOCSCTTY` would need; a host
//! without `setsid` gets the shell in a process group of its own without a controlling terminal
//! (no job control). Ending the session hangs up every process of the session (SIGHUP, then
//! SIGKILL after a grace), found through `/proc`; a process that made a session of its own
//! (`setsid`, a daemon) escapes that, as it would escape a logout.
//!
//! The PTY master is served by two threads (output, input) that poll it with a short timeout,
//! not by tokio's `AsyncFd`, whose constructors are `unsafe` (or deprecated as unsound) since
//! tokio 1.54; a resize is rustix's safe `tcsetwinsize` (nix has only an unsafe ioctl for it).

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_domain::WorkspaceId;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::poll::{PollFd, PollFlags, poll};
use nix::pty::PtyMaster;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Pid, UnlinkatFlags, unlinkat};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use super::{INHERITED_VARS, ProcessProvisioner};
use crate::inside::{
    ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, LISTING_PRUNED_DIRS,
    LISTING_SKIPPED_FILES, MAX_LIST_DEPTH, RelPath, TERMINAL_CHUNK, Target, TermSize, Terminal,
    TerminalInput,
};

/// After an exec's process group was killed, how long its output pipes may take to close (only
/// a process that left the group can still hold them).
const EXEC_DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Between the SIGHUP that ends a terminal session and the SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// After the shell exited, how long the terminal's last output may take to arrive.
const TERMINAL_DRAIN: Duration = Duration::from_secs(1);
/// Messages buffered in each direction of a terminal (so at most this many inputs are held
/// ahead of what the shell has read, besides the kernel's terminal buffer).
const TERMINAL_QUEUE: usize = 64;
/// How deep a directory tree [`remove_tree`] goes (each level holds a descriptor).
const MAX_DELETE_DEPTH: usize = 256;
/// Where `setsid(1)` may be.
const SETSID_PATHS: [&str; 2] = ["/usr/bin/setsid", "/bin/setsid"];

/// The refusal of a path through a symbolic link.
fn crosses_link(rel: &RelPath) -> InsideError {
    InsideError::Refused(format!("path crosses a symbolic link: {rel}"))
}

fn not_provisioned() -> InsideError {
    InsideError::NotRunning(
        "the workspace has no files on this host (never started, or purged)".to_owned(),
    )
}

/// The usual reading of an error met while resolving `rel` (or something beneath it).
fn lookup_error(e: Errno, rel: &RelPath) -> InsideError {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => InsideError::NotFound,
        Errno::ELOOP | Errno::EXDEV => crosses_link(rel),
        Errno::EACCES | Errno::EPERM => InsideError::Refused(format!("permission denied: {rel}")),
        e => InsideError::Backend(format!("{rel}: {e}")),
    }
}

fn io_error(rel: &RelPath, e: std::io::Error) -> InsideError {
    match e.raw_os_error() {
        Some(code) => lookup_error(Errno::from_raw(code), rel),
        None => InsideError::Backend(format!("{rel}: {e}")),
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, InsideError> + Send + 'static,
) -> Result<T, InsideError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| InsideError::Backend(format!("file task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Resolving beneath a root
// ---------------------------------------------------------------------------------------------

/// Set once `openat2(2)` answered that it does not exist, so the walk is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` beneath the directory `dir` with `flags` (plus `O_CLOEXEC`, and `O_NOCTTY`
/// unless `O_PATH`), through no symbolic link: crossing one, or naming one, is `ELOOP` (or
/// `EXDEV`).
fn open_beneath(dir: BorrowedFd<'_>, rel: &RelPath, flags: OFlag) -> nix::Result<OwnedFd> {
    let mut flags = flags | OFlag::O_CLOEXEC;
    // `openat2` refuses any other flag beside `O_PATH`.
    if !flags.contains(OFlag::O_PATH) {
        flags |= OFlag::O_NOCTTY;
    }
    #[cfg(target_os = "linux")]
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        use nix::fcntl::{OpenHow, ResolveFlag, openat2};
        let path = if rel.is_root() {
            ".".to_owned()
        } else {
            rel.to_string()
        };
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match openat2(dir, path.as_str(), how) {
            // Too old a kernel, or a seccomp filter that does not know the call (some answer
            // EPERM); a real EPERM comes back from the walk as well.
            Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            done => return done,
        }
    }
    open_walk(dir, rel, flags)
}

/// [`open_beneath`] without `openat2`: one component at a time, none followed if a link.
fn open_walk(dir: BorrowedFd<'_>, rel: &RelPath, flags: OFlag) -> nix::Result<OwnedFd> {
    let Some((last, parents)) = rel.components().split_last() else {
        return openat(dir, ".", flags, Mode::empty());
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let at = current.as_ref().map_or(dir, AsFd::as_fd);
        let next = openat(
            at,
            name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| link_or(e, at, name))?;
        current = Some(next);
    }
    let at = current.as_ref().map_or(dir, AsFd::as_fd);
    let fd = openat(at, last.as_str(), flags | OFlag::O_NOFOLLOW, Mode::empty())
        .map_err(|e| link_or(e, at, last))?;
    // `O_PATH | O_NOFOLLOW` opens a link itself rather than failing.
    if flags.contains(OFlag::O_PATH) && kind(&fstat(&fd)?) == Kind::Link {
        return Err(Errno::ELOOP);
    }
    Ok(fd)
}

/// `ELOOP` when `name` in `dir` is a symbolic link (which `O_DIRECTORY | O_NOFOLLOW` reports as
/// `ENOTDIR`), else `e`.
fn link_or(e: Errno, dir: BorrowedFd<'_>, name: &str) -> Errno {
    let is_link = e == Errno::ENOTDIR
        && fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| kind(&st) == Kind::Link);
    if is_link { Errno::ELOOP } else { e }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Link,
    /// A device file, FIFO or socket.
    Special,
}

fn kind(st: &FileStat) -> Kind {
    let format = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if format == SFlag::S_IFREG {
        Kind::File
    } else if format == SFlag::S_IFDIR {
        Kind::Dir
    } else if format == SFlag::S_IFLNK {
        Kind::Link
    } else {
        Kind::Special
    }
}

fn modified(st: &FileStat) -> Option<SystemTime> {
    let nanos = u32::try_from(st.st_mtime_nsec).ok()?;
    match u64::try_from(st.st_mtime) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::new(secs, nanos)),
        Err(_) => UNIX_EPOCH
            .checked_sub(Duration::from_secs(st.st_mtime.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos))),
    }
}

/// An opened root: its directory and where that is on the host.
struct OpenedRoot {
    /// An `O_PATH` descriptor of the directory.
    fd: OwnedFd,
    path: PathBuf,
}

/// An `O_PATH` descriptor of the directory `path`, following links (an operator's path).
fn open_dir_path(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `root` of the workspace `target` (see the module docs); `base` is the provisioner's.
fn open_root(base: &Path, target: &Target, root: FileRoot) -> Result<OpenedRoot, InsideError> {
    let shared = target.workspace_dir.as_deref().filter(|d| !d.is_empty());
    let sub = match (root, shared) {
        (FileRoot::Home | FileRoot::Plugins, _) => {
            return Err(InsideError::Unsupported(format!(
                "root {root} is not available on the process backend: the agent runs on the host"
            )));
        }
        (FileRoot::Workspace, Some(dir)) => {
            let fd = open_dir_path(Path::new(dir)).map_err(|e| match e {
                Errno::ENOENT | Errno::ENOTDIR => InsideError::NotRunning(
                    "the workspace's host directory does not exist".to_owned(),
                ),
                e => InsideError::Backend(format!("opening the workspace's host directory: {e}")),
            })?;
            return Ok(OpenedRoot {
                fd,
                path: PathBuf::from(dir),
            });
        }
        (FileRoot::Configs, _) => "configs",
        (FileRoot::Workspace, None) => "workspace",
    };
    let id = target.id.to_string();
    let top = open_dir_path(base).map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => not_provisioned(),
        e => InsideError::Backend(format!("opening the workspaces directory: {e}")),
    })?;
    let rel = RelPath::root()
        .join(&id)
        .and_then(|r| r.join(sub))
        .map_err(|e| InsideError::Backend(format!("workspace directory name: {e}")))?;
    let fd =
        open_beneath(top.as_fd(), &rel, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(
            |e| match e {
                Errno::ENOENT => not_provisioned(),
                Errno::ELOOP | Errno::EXDEV => InsideError::Refused(format!(
                    "the workspace's {root} directory is a symbolic link"
                )),
                Errno::ENOTDIR => {
                    InsideError::Refused(format!("the workspace's {root} is not a directory"))
                }
                e => InsideError::Backend(format!("opening the workspace's {root}: {e}")),
            },
        )?;
    Ok(OpenedRoot {
        fd,
        path: base.join(id).join(sub),
    })
}

/// The entry names of a directory, without `.` and `..`.
fn entry_names(dir: &mut Dir) -> Vec<CString> {
    dir.iter()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// [`Provisioner::list_files`](crate::Provisioner::list_files) of the process backend.
pub(super) async fn list_files(
    p: &ProcessProvisioner,
    target: &Target,
    root: FileRoot,
    dir: &RelPath,
    depth: u8,
) -> Result<Vec<FileEntry>, InsideError> {
    let base = p.config().root.clone();
    let (target, dir) = (target.clone(), dir.clone());
    blocking(move || {
        let opened = open_root(&base, &target, root)?;
        let fd = open_beneath(
            opened.fd.as_fd(),
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK,
        )
        .map_err(|e| match e {
            Errno::ENOENT => InsideError::NotFound,
            Errno::ENOTDIR => InsideError::Refused("not a directory".to_owned()),
            e => lookup_error(e, &dir),
        })?;
        let mut entries = Vec::new();
        walk(fd, "", 1, depth.clamp(1, MAX_LIST_DEPTH), &mut entries)
            .map_err(|e| lookup_error(e, &dir))?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    })
    .await
}

/// Adds the entries of `dir` (at `level`, 1 = the listed directory's own) to `out`, and those of
/// its subdirectories down to `depth`. Entries that vanish or cannot be opened meanwhile are
/// left out; so are names that no API path could name (not UTF-8, control characters).
fn walk(
    dir: OwnedFd,
    prefix: &str,
    level: u8,
    depth: u8,
    out: &mut Vec<FileEntry>,
) -> nix::Result<()> {
    let mut dir = Dir::from_fd(dir)?;
    for name in entry_names(&mut dir) {
        let Ok(text) = name.to_str() else { continue };
        if text.chars().any(char::is_control) || LISTING_SKIPPED_FILES.contains(&text) {
            continue;
        }
        let Ok(st) = fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = if prefix.is_empty() {
            text.to_owned()
        } else {
            format!("{prefix}/{text}")
        };
        match kind(&st) {
            Kind::Dir => {
                out.push(FileEntry {
                    path: path.clone(),
                    size: 0,
                    dir: true,
                    modified: modified(&st),
                });
                if level < depth && !LISTING_PRUNED_DIRS.contains(&text) {
                    let sub = openat(
                        &dir,
                        name.as_c_str(),
                        OFlag::O_RDONLY
                            | OFlag::O_DIRECTORY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_NONBLOCK
                            | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    );
                    if let Ok(sub) = sub {
                        walk(sub, &path, level + 1, depth, out)?;
                    }
                }
            }
            Kind::File => out.push(FileEntry {
                path,
                size: u64::try_from(st.st_size).unwrap_or(0),
                dir: false,
                modified: modified(&st),
            }),
            Kind::Link | Kind::Special => {}
        }
    }
    Ok(())
}

/// [`Provisioner::read_file`](crate::Provisioner::read_file) of the process backend.
pub(super) async fn read_file(
    p: &ProcessProvisioner,
    target: &Target,
    root: FileRoot,
    path: &RelPath,
    limit: u64,
) -> Result<Vec<u8>, InsideError> {
    let base = p.config().root.clone();
    let (target, path) = (target.clone(), path.clone());
    blocking(move || {
        let opened = open_root(&base, &target, root)?;
        read_beneath(opened.fd.as_fd(), &path, limit)
    })
    .await
}

/// Refuses what is not a regular file.
fn require_file(st: &FileStat, rel: &RelPath) -> Result<(), InsideError> {
    match kind(st) {
        Kind::File => Ok(()),
        Kind::Dir => Err(InsideError::Refused("path is a directory".to_owned())),
        Kind::Link => Err(crosses_link(rel)),
        Kind::Special => Err(InsideError::Refused(format!(
            "not a regular file (a device, FIFO or socket): {rel}"
        ))),
    }
}

fn read_beneath(root: BorrowedFd<'_>, rel: &RelPath, limit: u64) -> Result<Vec<u8>, InsideError> {
    let Some(name) = rel.file_name() else {
        return Err(InsideError::Refused("path is a directory".to_owned()));
    };
    let parent = open_beneath(root, &rel.parent(), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|e| lookup_error(e, rel))?;
    // Looked at before it is opened: a device or FIFO is never opened.
    let st =
        fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| lookup_error(e, rel))?;
    require_file(&st, rel)?;
    let too_large = |size: u64| InsideError::TooLarge { size, limit };
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(too_large(size));
    }
    let fd = openat(
        &parent,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| lookup_error(e, rel))?;
    // Swapped between the look and the open?
    let st = fstat(&fd).map_err(|e| lookup_error(e, rel))?;
    require_file(&st, rel)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::fs::File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(rel, e))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        // It grew while being read.
        return Err(too_large(read));
    }
    Ok(bytes)
}

/// [`Provisioner::write_files`](crate::Provisioner::write_files) of the process backend.
pub(super) async fn write_files(
    p: &ProcessProvisioner,
    target: &Target,
    root: FileRoot,
    files: Vec<(RelPath, Vec<u8>)>,
) -> Result<(), InsideError> {
    let base = p.config().root.clone();
    let target = target.clone();
    blocking(move || {
        let opened = open_root(&base, &target, root)?;
        for (path, content) in &files {
            write_beneath(opened.fd.as_fd(), path, content)?;
        }
        Ok(())
    })
    .await
}

/// Writes `content` to `rel` beneath `root`: a temporary file in the same directory, synced,
/// renamed over the name (so a reader sees the old or the new file, and a link at the name is
/// replaced, not followed). An existing file keeps its permission bits; a new one is 0644.
fn write_beneath(root: BorrowedFd<'_>, rel: &RelPath, content: &[u8]) -> Result<(), InsideError> {
    let Some(name) = rel.file_name() else {
        return Err(InsideError::Refused("path is a directory".to_owned()));
    };
    let parent = make_parents(root, &rel.parent())?;
    let mode = match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if kind(&st) == Kind::Dir => {
            return Err(InsideError::Refused("path is a directory".to_owned()));
        }
        Ok(st) if kind(&st) == Kind::File => Mode::from_bits_truncate(st.st_mode & 0o777),
        Ok(_) | Err(Errno::ENOENT) => Mode::from_bits_truncate(0o644),
        Err(e) => return Err(lookup_error(e, rel)),
    };
    let temp = temp_name(name)?;
    let fd = openat(
        &parent,
        temp.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
    .map_err(|e| lookup_error(e, rel))?;
    let written = (|| {
        let mut file = std::fs::File::from(fd);
        file.write_all(content).map_err(|e| io_error(rel, e))?;
        // The umask may have narrowed the mode at creation.
        fchmod(&file, mode).map_err(|e| lookup_error(e, rel))?;
        file.sync_all().map_err(|e| io_error(rel, e))?;
        renameat(&parent, temp.as_c_str(), &parent, name).map_err(|e| lookup_error(e, rel))
    })();
    if written.is_err() {
        let _ = unlinkat(&parent, temp.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// `.<name>.berth-tmp-<16 hex digits>`, with `name` shortened to fit a file name.
fn temp_name(name: &str) -> Result<CString, InsideError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| InsideError::Backend(format!("drawing a temporary name: {e}")))?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    CString::new(format!(".{}.berth-tmp-{hex}", &name[..end]))
        .map_err(|_| InsideError::Refused("path contains a NUL character".to_owned()))
}

/// Opens the directory `dir` beneath `root`, creating what is missing (0755, less the umask),
/// through no symbolic link.
fn make_parents(root: BorrowedFd<'_>, dir: &RelPath) -> Result<OwnedFd, InsideError> {
    let parent_error = |e: Errno, rel: &RelPath| match e {
        Errno::ENOTDIR => InsideError::Refused(format!("not a directory: {rel}")),
        e => lookup_error(e, rel),
    };
    match open_beneath(root, dir, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(parent_error(e, dir)),
    }
    let mut current = openat(
        root,
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| parent_error(e, &RelPath::root()))?;
    let mut walked = RelPath::root();
    for name in dir.components() {
        walked = walked
            .join(name)
            .map_err(|e| InsideError::Refused(e.to_string()))?;
        match mkdirat(&current, name.as_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(parent_error(e, &walked)),
        }
        current = openat(
            &current,
            name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| parent_error(link_or(e, current.as_fd(), name), &walked))?;
    }
    Ok(current)
}

/// [`Provisioner::delete_file`](crate::Provisioner::delete_file) of the process backend.
pub(super) async fn delete_file(
    p: &ProcessProvisioner,
    target: &Target,
    root: FileRoot,
    path: &RelPath,
) -> Result<(), InsideError> {
    let base = p.config().root.clone();
    let (target, path) = (target.clone(), path.clone());
    blocking(move || {
        let opened = open_root(&base, &target, root)?;
        delete_beneath(opened.fd.as_fd(), &path)
    })
    .await
}

fn delete_beneath(root: BorrowedFd<'_>, rel: &RelPath) -> Result<(), InsideError> {
    let Some(name) = rel.file_name() else {
        return Err(InsideError::Refused(
            "the root itself cannot be deleted".to_owned(),
        ));
    };
    let parent = open_beneath(root, &rel.parent(), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|e| lookup_error(e, rel))?;
    let st =
        fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| lookup_error(e, rel))?;
    let name = CString::new(name)
        .map_err(|_| InsideError::Refused("path contains a NUL character".to_owned()))?;
    if kind(&st) == Kind::Dir {
        remove_tree(parent.as_fd(), &name, 0).map_err(|e| lookup_error(e, rel))
    } else {
        // A link is removed itself, never its target.
        unlinkat(&parent, name.as_c_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|e| lookup_error(e, rel))
    }
}

/// Removes the directory `name` of `parent` with everything in it, by descriptors, following
/// no link. Something that vanished meanwhile is fine.
fn remove_tree(parent: BorrowedFd<'_>, name: &CStr, level: usize) -> nix::Result<()> {
    let ok_if_gone = |r: nix::Result<()>| match r {
        Err(Errno::ENOENT) => Ok(()),
        r => r,
    };
    if level >= MAX_DELETE_DEPTH {
        return Err(Errno::EMFILE);
    }
    let fd = match openat(
        parent,
        name,
        OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Swapped for a link or a file meanwhile: that is removed itself.
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            return ok_if_gone(unlinkat(parent, name, UnlinkatFlags::NoRemoveDir));
        }
        Err(e) => return ok_if_gone(Err(e)),
    };
    let mut dir = Dir::from_fd(fd)?;
    for entry in entry_names(&mut dir) {
        match fstatat(&dir, entry.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == Kind::Dir => remove_tree(dir.as_fd(), &entry, level + 1)?,
            Ok(_) => ok_if_gone(unlinkat(&dir, entry.as_c_str(), UnlinkatFlags::NoRemoveDir))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    drop(dir);
    ok_if_gone(unlinkat(parent, name, UnlinkatFlags::RemoveDir))
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A working directory that was resolved beneath its root, held open until the spawn.
struct WorkDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl WorkDir {
    /// The path the child enters: the opened directory itself through `/proc`, or its host path
    /// where there is no `/proc`.
    fn chdir_path(&self) -> PathBuf {
        let fds = Path::new("/proc/self/fd");
        if fds.is_dir() {
            fds.join(self.fd.as_raw_fd().to_string())
        } else {
            self.path.clone()
        }
    }
}

/// `/workspace[/…]` or `/configs[/…]` as a root and a path beneath it.
fn parse_cwd(cwd: &str) -> Option<(FileRoot, RelPath)> {
    [FileRoot::Workspace, FileRoot::Configs]
        .into_iter()
        .find_map(|root| {
            let rest = cwd.strip_prefix(root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            RelPath::parse(rest.trim_start_matches('/'))
                .ok()
                .map(|rel| (root, rel))
        })
}

/// The working directory of a command or shell: `cwd` as the workspace sees it, or the
/// workspace directory (`/configs` where there is none).
fn resolve_cwd(base: &Path, target: &Target, cwd: Option<&str>) -> Result<WorkDir, InsideError> {
    let Some(cwd) = cwd else {
        let opened = match open_root(base, target, FileRoot::Workspace) {
            Err(InsideError::NotRunning(_)) => open_root(base, target, FileRoot::Configs)?,
            opened => opened?,
        };
        return Ok(WorkDir {
            fd: opened.fd,
            path: opened.path,
        });
    };
    let (root, rel) = parse_cwd(cwd).ok_or_else(|| {
        InsideError::Refused(format!(
            "working directory must be /workspace or /configs, or beneath them: {cwd}"
        ))
    })?;
    let opened = open_root(base, target, root)?;
    let fd =
        open_beneath(opened.fd.as_fd(), &rel, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|e| {
            match e {
                Errno::ENOENT => {
                    InsideError::Refused(format!("working directory not found: {cwd}"))
                }
                Errno::ENOTDIR => {
                    InsideError::Refused(format!("working directory is not a directory: {cwd}"))
                }
                Errno::ELOOP | Errno::EXDEV => InsideError::Refused(format!(
                    "working directory crosses a symbolic link: {cwd}"
                )),
                e => InsideError::Backend(format!("opening the working directory {cwd}: {e}")),
            }
        })?;
    Ok(WorkDir {
        fd,
        path: opened.path.join(rel.to_string()),
    })
}

/// A command with the agent's environment rules (see the module docs).
fn command_with_env(program: &Path, p: &ProcessProvisioner, id: WorkspaceId) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for key in INHERITED_VARS {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("WORKSPACE_ID", id.to_string()).env(
        "WORKSPACE_CONFIG_PATH",
        p.workspace_root(id).join("configs"),
    );
    cmd
}

/// Kills a process group with SIGKILL; dropped armed (the exec was cancelled), it does so too.
struct GroupKill {
    pgid: i32,
    armed: bool,
}

impl GroupKill {
    fn kill(&self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }

    /// Kills the group until none of it is left (SIGKILL cannot be ignored; dying only takes a
    /// moment), so that nothing of the command runs once the exec returned.
    async fn kill_all(&mut self) {
        for _ in 0..KILL_ROUNDS {
            self.kill();
            if live_processes(self.pgid, Membership::Group).is_empty() {
                break;
            }
            tokio::time::sleep(KILL_ROUND_PAUSE).await;
        }
        self.armed = false;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// How many times a group or session is killed before the rest is left to the kernel.
const KILL_ROUNDS: usize = 50;
/// Between two rounds of kills.
const KILL_ROUND_PAUSE: Duration = Duration::from_millis(10);

/// How a process belongs to a group of processes berth started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Its process group is the id.
    Group,
    /// Its session is the id.
    Session,
}

/// The live processes (zombies do not count) in the process group or session `id`, found
/// through `/proc` (none where there is no `/proc`).
fn live_processes(id: i32, by: Membership) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|(state, pgrp, session)| {
                let member = match by {
                    Membership::Group => pgrp == id,
                    Membership::Session => session == id,
                };
                member && state != 'Z' && state != 'X'
            })
        })
        .collect()
}

/// [`Provisioner::exec`](crate::Provisioner::exec) of the process backend.
#[tracing::instrument(skip_all, fields(workspace.id = %target.id))]
pub(super) async fn exec(
    p: &ProcessProvisioner,
    target: &Target,
    request: ExecRequest,
) -> Result<ExecOutput, InsideError> {
    let Some(program) = request.cmd.first() else {
        return Err(InsideError::Refused("the command is empty".to_owned()));
    };
    let base = p.config().root.clone();
    let (t, cwd) = (target.clone(), request.cwd.clone());
    let workdir = blocking(move || resolve_cwd(&base, &t, cwd.as_deref())).await?;

    let mut cmd = command_with_env(Path::new(program), p, target.id);
    cmd.args(&request.cmd[1..]);
    for (key, value) in &request.env {
        cmd.env(key, value);
    }
    let stdin = if request.stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    cmd.current_dir(workdir.chdir_path())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            InsideError::Refused(format!("command not found: {program}"))
        }
        std::io::ErrorKind::PermissionDenied => {
            InsideError::Refused(format!("command not executable: {program}"))
        }
        _ => InsideError::Backend(format!("starting {program}: {e}")),
    })?;
    drop(workdir);
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| InsideError::Backend("the command vanished at spawn".to_owned()))?;
    let mut group = GroupKill {
        pgid: pid,
        armed: true,
    };

    let feeder = child.stdin.take().map(|mut stdin| {
        let bytes = request.stdin;
        // A command that does not read its input makes this fail with EPIPE, which is fine.
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        })
    });
    let (stop, stopped) = watch::channel(false);
    let limit = request.output_limit;
    let stdout = tokio::spawn(read_bounded(child.stdout.take(), limit, stopped.clone()));
    let stderr = tokio::spawn(read_bounded(child.stderr.take(), limit, stopped));

    let waited = tokio::time::timeout(request.timeout, child.wait()).await;
    // Whatever it left in its group (background children holding the pipes) goes too.
    group.kill();
    let (exit_code, timed_out) = match waited {
        Ok(Ok(status)) => (status.code().map(i64::from), false),
        Ok(Err(e)) => {
            return Err(InsideError::Backend(format!(
                "waiting for the command: {e}"
            )));
        }
        Err(_elapsed) => {
            let _ = child.wait().await;
            (None, true)
        }
    };
    group.kill_all().await;
    // The pipes are at their end unless something left the group and holds them.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(EXEC_DRAIN_GRACE).await;
        let _ = stop.send(true);
    });
    let (stdout, out_cut) = stdout.await.unwrap_or_default();
    let (stderr, err_cut) = stderr.await.unwrap_or_default();
    stopper.abort();
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    tracing::debug!(pid, ?exit_code, timed_out, "exec finished");
    Ok(ExecOutput {
        exit_code,
        stdout,
        stderr,
        truncated: out_cut || err_cut,
        timed_out,
    })
}

/// Reads `reader` to its end (or until `stop`), keeping the first `limit` bytes; the flag says
/// whether anything was dropped.
async fn read_bounded<R: AsyncRead + Unpin>(
    reader: Option<R>,
    limit: usize,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let take = n.min(limit.saturating_sub(kept.len()));
        kept.extend_from_slice(&buf[..take]);
        truncated |= take < n;
    }
    (kept, truncated)
}

// ---------------------------------------------------------------------------------------------
// Terminals
// ---------------------------------------------------------------------------------------------

fn is_executable(path: &Path) -> bool {
    path.is_absolute()
        && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `$SHELL` of the server when it is an executable, else `/bin/bash`, else `/bin/sh`.
fn pick_shell() -> PathBuf {
    if let Some(shell) = std::env::var_os("SHELL").map(PathBuf::from)
        && is_executable(&shell)
    {
        return shell;
    }
    ["/bin/bash", "/bin/sh"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

fn winsize(size: TermSize) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A fresh PTY of `size`: the master (non-blocking) and the slave, both close-on-exec (so no
/// other child the server spawns meanwhile inherits them).
fn open_pty(size: TermSize) -> nix::Result<(PtyMaster, OwnedFd)> {
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(&master, winsize(size))
        .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    Ok((master, slave))
}

/// [`Provisioner::open_terminal`](crate::Provisioner::open_terminal) of the process backend.
#[tracing::instrument(skip_all, fields(workspace.id = %target.id))]
pub(super) async fn open_terminal(
    p: &ProcessProvisioner,
    target: &Target,
    size: TermSize,
) -> Result<Terminal, InsideError> {
    let base = p.config().root.clone();
    let t = target.clone();
    let workdir = blocking(move || resolve_cwd(&base, &t, None)).await?;
    let shell = pick_shell();
    let (master, slave) =
        open_pty(size).map_err(|e| InsideError::Backend(format!("opening a PTY: {e}")))?;
    let io = |e: std::io::Error| InsideError::Backend(format!("sharing the PTY: {e}"));
    // Duplicated close-on-exec, like every descriptor here.
    let reader_fd = master.as_fd().try_clone_to_owned().map_err(io)?;
    let writer_fd = master.as_fd().try_clone_to_owned().map_err(io)?;
    let setsid = SETSID_PATHS
        .into_iter()
        .map(Path::new)
        .find(|p| is_executable(p));
    // Never a process-group leader, `setsid -c` makes its session without forking, so the pid
    // of the child is the shell's and the session's.
    let mut cmd = match setsid {
        Some(setsid) => {
            let mut cmd = command_with_env(setsid, p, target.id);
            cmd.arg("-c").arg(&shell);
            cmd
        }
        None => {
            let mut cmd = command_with_env(&shell, p, target.id);
            cmd.process_group(0);
            cmd
        }
    };
    cmd.arg("-i")
        .env("TERM", "xterm-256color")
        .env("SHELL", &shell)
        .current_dir(workdir.chdir_path())
        .stdin(Stdio::from(slave.try_clone().map_err(io)?))
        .stdout(Stdio::from(slave.try_clone().map_err(io)?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        InsideError::Backend(format!("starting the shell {}: {e}", shell.display()))
    })?;
    // Our copies of the slave go, so the master reads its end once the session is gone.
    drop(cmd);
    drop(workdir);
    let leader = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| InsideError::Backend("the shell vanished at spawn".to_owned()))?;
    // From here on, a failure (or a dropped task) kills the session.
    let session = Session {
        leader,
        own_session: setsid.is_some(),
        armed: true,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (input, input_rx) = mpsc::channel(TERMINAL_QUEUE);
    let (output_tx, output) = mpsc::channel(TERMINAL_QUEUE);
    let (to_writer, writer_rx) = mpsc::channel(TERMINAL_QUEUE);
    let (reader_done_tx, reader_done) = oneshot::channel();
    let (exit_tx, exit) = oneshot::channel();
    let thread = |e: std::io::Error| InsideError::Backend(format!("starting a PTY thread: {e}"));
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("berth-pty-out".to_owned())
            .spawn(move || pump_output(&reader_fd, &output_tx, &stop, reader_done_tx))
            .map_err(thread)?;
    }
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("berth-pty-in".to_owned())
            .spawn(move || pump_input(&writer_fd, writer_rx, &stop))
            .map_err(thread)?;
    }
    tracing::info!(pid = leader, shell = %shell.display(), "terminal opened on the host");
    tokio::spawn(supervise(Supervised {
        master,
        child,
        session,
        input: input_rx,
        to_writer,
        reader_done,
        stop,
        exit: exit_tx,
    }));
    Ok(Terminal {
        input,
        output,
        exit,
    })
}

/// How long a PTY thread waits for the master in one go before it looks at its stop flag.
const POLL_TICK_MS: u16 = 100;

fn wait_for(fd: &OwnedFd, events: PollFlags) {
    let _ = poll(&mut [PollFd::new(fd.as_fd(), events)], POLL_TICK_MS);
}

/// The output thread: the master's bytes, in chunks of at most [`TERMINAL_CHUNK`], to `output`
/// until the master's end (no process holds the slave any more) or `stop`. Output nobody reads
/// any more is read and dropped, so the shell never blocks on a full terminal.
fn pump_output(
    fd: &OwnedFd,
    output: &mpsc::Sender<Vec<u8>>,
    stop: &AtomicBool,
    done: oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; TERMINAL_CHUNK];
    let mut forward = true;
    while !stop.load(Ordering::Relaxed) {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                forward = forward && output.blocking_send(buf[..n].to_vec()).is_ok();
            }
            Err(Errno::EAGAIN) => wait_for(fd, PollFlags::POLLIN),
            Err(Errno::EINTR) => {}
            // EIO: every holder of the slave is gone.
            Err(_) => break,
        }
    }
    let _ = done.send(());
}

/// The input thread: writes what the supervisor hands it to the master, until the supervisor
/// lets go, the session is gone or `stop`.
fn pump_input(fd: &OwnedFd, mut input: mpsc::Receiver<Vec<u8>>, stop: &AtomicBool) {
    while let Some(bytes) = input.blocking_recv() {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match nix::unistd::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                // The shell is not reading: the terminal is full.
                Err(Errno::EAGAIN) => wait_for(fd, PollFlags::POLLOUT),
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// The processes of a terminal: the shell's session (or, without `setsid`, its process group).
/// Dropped armed (the runtime went away mid-session), it kills them.
struct Session {
    leader: i32,
    own_session: bool,
    armed: bool,
}

impl Session {
    /// The live members.
    fn members(&self) -> Vec<i32> {
        let by = if self.own_session {
            Membership::Session
        } else {
            Membership::Group
        };
        live_processes(self.leader, by)
    }

    /// Sends `signal` to every member; how many there were.
    fn signal(&self, signal: Signal) -> usize {
        let members = self.members();
        for &pid in &members {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        members.len()
    }

    /// SIGHUP to every member, up to `grace` for them to go, then SIGKILL until none is left
    /// (a member may fork meanwhile); the shell is reaped.
    async fn end(&mut self, child: &mut Child, grace: Duration) -> Option<ExitStatus> {
        if self.signal(Signal::SIGHUP) > 0 {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && !self.members().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for _ in 0..KILL_ROUNDS {
            if self.signal(Signal::SIGKILL) == 0 {
                break;
            }
            tokio::time::sleep(KILL_ROUND_PAUSE).await;
        }
        let status = child.wait().await.ok();
        self.armed = false;
        status
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// State, process group and session of `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, pgrp, session))
}

/// What the supervisor of a terminal holds.
struct Supervised {
    master: PtyMaster,
    child: Child,
    session: Session,
    input: mpsc::Receiver<TerminalInput>,
    to_writer: mpsc::Sender<Vec<u8>>,
    reader_done: oneshot::Receiver<()>,
    stop: Arc<AtomicBool>,
    exit: oneshot::Sender<Option<i64>>,
}

/// Hands input to the input thread and applies resizes until the shell exits or the input is
/// dropped, then ends the session, lets the last output through and reports the exit code.
async fn supervise(mut s: Supervised) {
    let mut data: Option<Vec<u8>> = None;
    let exited = loop {
        tokio::select! {
            permit = s.to_writer.reserve(), if data.is_some() => {
                if let (Ok(permit), Some(bytes)) = (permit, data.take()) {
                    permit.send(bytes);
                }
            }
            message = s.input.recv(), if data.is_none() => match message {
                Some(TerminalInput::Data(bytes)) => data = Some(bytes),
                Some(TerminalInput::Resize(size)) => {
                    // The kernel sends SIGWINCH to the terminal's foreground process group.
                    if let Err(e) = rustix::termios::tcsetwinsize(&s.master, winsize(size)) {
                        tracing::debug!(error = %e, "resizing the terminal failed");
                    }
                }
                None => break None,
            },
            status = s.child.wait() => break status.ok(),
        }
    };
    drop(s.to_writer);
    // Whatever the shell left running in its session goes with it: nothing outlives the session.
    let ended = s.session.end(&mut s.child, HANGUP_GRACE).await;
    let status = exited.or(ended);
    let mut reader_done = s.reader_done;
    if tokio::time::timeout(TERMINAL_DRAIN, &mut reader_done)
        .await
        .is_err()
    {
        // Something outside the session still holds the slave.
        s.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(TERMINAL_DRAIN, reader_done).await;
    }
    s.stop.store(true, Ordering::Relaxed);
    drop(s.master);
    let code = status.and_then(|st| st.code()).map(i64::from);
    tracing::info!(pid = s.session.leader, ?code, "terminal closed");
    let _ = s.exit.send(code);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    /// The walk (used where `openat2` is missing) refuses links as `openat2` does.
    #[test]
    fn the_walk_refuses_every_link_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), b"x").unwrap();
        symlink(tmp.path(), root.join("up")).unwrap();
        symlink("b", root.join("a/lb")).unwrap();
        symlink("f.txt", root.join("a/b/lf")).unwrap();
        let dir = open_dir_path(&root).unwrap();
        let dir = dir.as_fd();

        for (path, flags) in [
            ("a/b/f.txt", OFlag::O_RDONLY),
            ("a/b/f.txt", OFlag::O_PATH),
            ("a/b", OFlag::O_PATH | OFlag::O_DIRECTORY),
            ("", OFlag::O_PATH | OFlag::O_DIRECTORY),
        ] {
            assert!(open_walk(dir, &rel(path), flags).is_ok(), "{path}");
            assert!(open_beneath(dir, &rel(path), flags).is_ok(), "{path}");
        }
        for (path, flags) in [
            ("up/root", OFlag::O_PATH | OFlag::O_DIRECTORY),
            ("up", OFlag::O_PATH | OFlag::O_DIRECTORY),
            ("up", OFlag::O_PATH),
            ("a/lb/f.txt", OFlag::O_RDONLY),
            ("a/b/lf", OFlag::O_RDONLY),
            ("a/b/lf", OFlag::O_PATH),
        ] {
            assert_eq!(
                open_walk(dir, &rel(path), flags).unwrap_err(),
                Errno::ELOOP,
                "walk {path}"
            );
            let e = open_beneath(dir, &rel(path), flags).unwrap_err();
            assert!(
                matches!(e, Errno::ELOOP | Errno::EXDEV),
                "openat2 {path}: {e}"
            );
        }
        assert_eq!(
            open_walk(dir, &rel("a/nope/x"), OFlag::O_PATH).unwrap_err(),
            Errno::ENOENT
        );
        assert_eq!(
            open_walk(dir, &rel("a/b/f.txt/x"), OFlag::O_PATH).unwrap_err(),
            Errno::ENOTDIR
        );
    }

    #[test]
    fn working_directories_are_workspace_or_configs_paths() {
        assert_eq!(
            parse_cwd("/workspace"),
            Some((FileRoot::Workspace, RelPath::root()))
        );
        assert_eq!(
            parse_cwd("/workspace/a/b/"),
            Some((FileRoot::Workspace, rel("a/b")))
        );
        assert_eq!(parse_cwd("/configs/x"), Some((FileRoot::Configs, rel("x"))));
        for bad in [
            "/workspaces",
            "/workspace/../etc",
            "/etc",
            "workspace",
            "",
            "/home",
            "/configsx",
        ] {
            assert_eq!(parse_cwd(bad), None, "{bad}");
        }
    }

    #[test]
    fn temporary_names_fit_and_differ() {
        let long = "é".repeat(127);
        let a = temp_name(&long).unwrap();
        let b = temp_name(&long).unwrap();
        assert_ne!(a, b);
        assert!(a.as_bytes().len() <= 255, "{}", a.as_bytes().len());
        assert!(
            temp_name("notes.md")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".notes.md.berth-tmp-")
        );
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, pgrp, session) = proc_stat(me).unwrap();
        assert_ne!(state, 'Z');
        assert_eq!(pgrp, nix::unistd::getpgrp().as_raw());
        assert_eq!(session, nix::unistd::getsid(None).unwrap().as_raw());
    }
}

//! `cargo xtask image`: builds the test container image `berth-agent:test` without a registry.
//!
//! No image can be pulled on the development machines, so there is no `FROM` anything: the image
//! is a root filesystem assembled here and handed to `docker import`.
//!
//! 1. `cargo build -p berth-agent --release`.
//! 2. `ldd` lists the binary's shared libraries and its dynamic loader; each is copied (links
//!    followed) to the same path inside `target/xtask-image/<pid>/rootfs`, next to the binary at
//!    `/usr/local/bin/berth-agent`, an `/etc/passwd` and `/etc/group` naming uid/gid 1000 (the
//!    agent user of every berth image, REFERENCE.md §5.1.2), a world-writable `/tmp`, and the
//!    mount points `/configs` and `/workspace` owned by 1000 (a fresh named volume copies the
//!    ownership of its mount point, so the agent can write to its workspace volume).
//! 3. A static busybox (Debian's `busybox-static`, `/bin/busybox` of the build machine) is copied
//!    to `/bin/busybox`, with `/bin/<applet>` symlinks for [`APPLETS`] (`sh`, `mv`, `rm`, `kill`,
//!    `stty`, …): the Docker provisioner's exec, terminal and atomic file writes need a `/bin/sh`
//!    and a few tools inside the workspace, and its tests plant symbolic links and FIFOs and look
//!    at `/proc` with them. A missing or dynamically linked `/bin/busybox` fails the build with
//!    the `apt-get install busybox-static` that fixes it.
//! 4. The root filesystem is piped into `docker import` (`tar -C ROOTFS -c . | docker import
//!    --change 'ENTRYPOINT [...]' --change 'USER 1000:1000' - berth-agent:test`), then the
//!    image it replaced is removed if nothing uses it.
//!
//! `cargo xtask test` runs this first (see `tasks/test.rs`), and fails early with
//! [`require_docker`]'s message when no Docker Engine answers: the Docker provisioner's tests need
//! one and never skip.

use std::{
    fs::{self, DirBuilder},
    os::unix::fs::{DirBuilderExt, PermissionsExt, chown},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    process::{cargo, display, run_captured, run_echoed},
    workspace_root,
};

/// The tag the Docker provisioner's tests run.
pub const IMAGE: &str = "berth-agent:test";

/// Where the binary lives inside the image.
const ENTRYPOINT: &str = "/usr/local/bin/berth-agent";

/// The agent user and group inside the image.
const AGENT_UID: u32 = 1000;

/// The static busybox of the build machine (Debian package `busybox-static`), copied into the
/// image at the same path.
const BUSYBOX: &str = "/bin/busybox";

/// The busybox applets linked into `/bin`: the shell and tools the Docker provisioner's exec,
/// terminal and file writes use (`sh`, `mv`, `rm`, `kill`), and what its tests run inside a
/// workspace.
const APPLETS: [&str; 25] = [
    "sh", "mv", "rm", "kill", "cat", "ls", "sleep", "echo", "env", "id", "pwd", "stty", "head",
    "yes", "find", "mkdir", "ln", "printf", "true", "false", "wc", "touch", "stat", "mkfifo",
    "chmod",
];

/// Runs the task; it takes no arguments.
pub fn run(args: &[String]) -> Result<ExitCode> {
    ensure!(
        args.is_empty(),
        "`cargo xtask image` takes no arguments, got {args:?}"
    );
    require_docker()?;
    build()?;
    Ok(ExitCode::SUCCESS)
}

/// Fails with instructions when `docker info` does not succeed.
pub fn require_docker() -> Result<()> {
    let mut info = Command::new("docker");
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    match run_captured(&mut info) {
        Ok(version) => {
            eprintln!("xtask: Docker Engine {} answers", version.trim());
            Ok(())
        }
        Err(err) => bail!(
            "no Docker Engine answers ({err:#}).\n\
             The Docker provisioner's tests run against a real daemon and do not skip: install \
             Docker, start it (e.g. `sudo systemctl start docker`), make sure this user may use \
             its socket (`docker info` must work; or point DOCKER_HOST at it), then rerun. \
             The image `{IMAGE}` is built locally by `cargo xtask image`; nothing is pulled."
        ),
    }
}

/// Builds the agent and imports it as [`IMAGE`].
pub fn build() -> Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "berth-agent", "--release"]);
    let status = run_echoed(&mut build)?;
    ensure!(status.success(), "{} failed ({status})", display(&build));

    let binary = workspace_root()
        .join("target")
        .join("release")
        .join("berth-agent");
    ensure!(
        binary.is_file(),
        "{} was not built (is CARGO_TARGET_DIR set? it is not supported here)",
        binary.display()
    );

    let work = workspace_root()
        .join("target")
        .join("xtask-image")
        .join(std::process::id().to_string());
    let rootfs = work.join("rootfs");
    // Leftovers of an interrupted run with the same pid are replaced.
    let _ = fs::remove_dir_all(&work);
    let result = assemble(&binary, &rootfs).and_then(|()| import(&rootfs));
    let cleanup = fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()));
    result?;
    cleanup?;
    eprintln!("xtask: built image {IMAGE}");
    Ok(())
}

/// Lays out the root filesystem of the image under `rootfs`.
fn assemble(binary: &Path, rootfs: &Path) -> Result<()> {
    let inside = |path: &Path| rootfs.join(path.strip_prefix("/").unwrap_or(path));

    copy_into(binary, &inside(Path::new(ENTRYPOINT)))?;
    fs::set_permissions(
        inside(Path::new(ENTRYPOINT)),
        fs::Permissions::from_mode(0o755),
    )?;

    let mut ldd = Command::new("ldd");
    ldd.arg(binary);
    // `ldd` exits non-zero for a static binary ("not a dynamic executable"): then there is
    // nothing to copy.
    let libs = match run_captured(&mut ldd) {
        Ok(out) => shared_objects(&out)?,
        Err(err) if format!("{err:#}").contains("not a dynamic executable") => Vec::new(),
        Err(err) => return Err(err),
    };
    for lib in &libs {
        copy_into(lib, &inside(lib))?;
    }

    add_busybox(&inside(Path::new("/bin")))?;

    let etc = inside(Path::new("/etc"));
    mkdir(&etc, 0o755)?;
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nagent:x:{AGENT_UID}:{AGENT_UID}:berth agent:/workspace:/sbin/nologin\n"
        ),
    )?;
    fs::write(
        etc.join("group"),
        format!("root:x:0:\nagent:x:{AGENT_UID}:\n"),
    )?;

    let tmp = inside(Path::new("/tmp"));
    mkdir(&tmp, 0o1777)?;
    // `DirBuilder::mode` is filtered by the umask; the sticky, world-writable bits must be exact.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;

    for dir in ["/configs", "/workspace"] {
        let dir = inside(Path::new(dir));
        mkdir(&dir, 0o755)?;
        // Only root can give files away; a non-root build still works, but the agent cannot
        // write to a fresh workspace volume then.
        if let Err(err) = chown(&dir, Some(AGENT_UID), Some(AGENT_UID)) {
            eprintln!(
                "xtask: warning: cannot chown {} to {AGENT_UID} ({err}); /workspace stays root's",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Copies the static [`BUSYBOX`] into `bin` (the image's `/bin`) and links every applet of
/// [`APPLETS`] to it.
fn add_busybox(bin: &Path) -> Result<()> {
    let busybox = Path::new(BUSYBOX);
    let install = "install Debian's static busybox (`apt-get install busybox-static`, as root) \
                   and rerun: the test image needs a /bin/sh and a few tools for the Docker \
                   provisioner's exec, terminal and file writes";
    ensure!(busybox.is_file(), "{BUSYBOX} is missing: {install}");
    // A dynamically linked busybox (the `busybox` package) would not start in the image, which
    // holds only the agent's own libraries.
    let mut ldd = Command::new("ldd");
    ldd.arg(busybox);
    match run_captured(&mut ldd) {
        Err(err) if format!("{err:#}").contains("not a dynamic executable") => {}
        Err(err) => return Err(err),
        Ok(_) => bail!("{BUSYBOX} is dynamically linked: {install}"),
    }
    let target = bin.join("busybox");
    copy_into(busybox, &target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for applet in APPLETS {
        let link = bin.join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .with_context(|| format!("linking {} to busybox", link.display()))?;
    }
    Ok(())
}

/// The absolute paths `ldd` printed: `libc.so.6 => /lib/.../libc.so.6 (0x…)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file and is left out. A library `ldd`
/// could not find is an error: the image would not start.
fn shared_objects(ldd_output: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in ldd_output.lines() {
        let target = match line.split_once("=>") {
            Some((_, right)) => right,
            None => line,
        };
        ensure!(
            !target.trim().starts_with("not found"),
            "ldd cannot find a library of berth-agent: {}",
            line.trim()
        );
        if let Some(path) = target.split_whitespace().next()
            && path.starts_with('/')
        {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Copies `from` (following links) to `to`, creating the parent directories.
fn copy_into(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn mkdir(dir: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `tar -C rootfs -c . | docker import … - IMAGE`, then removes the image the tag pointed at
/// before, so rebuilding does not pile up dangling images.
fn import(rootfs: &Path) -> Result<()> {
    let previous = image_id();

    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped());
    let mut import = Command::new("docker");
    import.args([
        "import",
        "--change",
        &format!(r#"ENTRYPOINT ["{ENTRYPOINT}"]"#),
        "--change",
        &format!("USER {AGENT_UID}:{AGENT_UID}"),
        "--change",
        "LABEL berth.test-image=true",
        "-",
        IMAGE,
    ]);
    eprintln!("xtask: running {} | {}", display(&tar), display(&import));

    let mut tar_child = tar
        .spawn()
        .with_context(|| format!("could not start {}", display(&tar)))?;
    let stdout = tar_child.stdout.take().context("tar has no stdout")?;
    let imported = import.stdin(stdout).stdout(Stdio::null()).status();
    let tarred = tar_child.wait().context("waiting for tar")?;
    let imported = imported.with_context(|| format!("could not start {}", display(&import)))?;
    ensure!(tarred.success(), "{} failed ({tarred})", display(&tar));
    ensure!(
        imported.success(),
        "{} failed ({imported})",
        display(&import)
    );

    if let Some(old) = previous
        && image_id().as_deref() != Some(old.as_str())
    {
        // Still used by a container (a test that is running, say): then it stays.
        let _ = Command::new("docker")
            .args(["image", "rm", &old])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

/// The id [`IMAGE`] points at, if it exists.
fn image_id() -> Option<String> {
    let mut inspect = Command::new("docker");
    inspect
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .stderr(Stdio::null());
    run_captured(&mut inspect)
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_objects_are_the_absolute_paths_ldd_prints() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f46)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f46)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f46)\n";
        assert_eq!(
            shared_objects(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_fails_the_build() {
        let err = shared_objects("\tlibfoo.so => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so"), "{err}");
    }
}

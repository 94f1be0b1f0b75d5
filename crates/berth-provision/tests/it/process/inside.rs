//! Looking inside a process workspace: files beneath its roots (never through a symbolic
//! link), one-shot commands and a terminal, all on real host directories and processes.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_provision::inside::{LISTING_PRUNED_DIRS, MAX_LIST_DEPTH};
use berth_provision::{
    ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, Provisioner, RelPath, Target,
    TermSize, Terminal, TerminalInput,
};
use tempfile::TempDir;

use super::*;

/// A provisioner with one workspace whose two directories exist, as after a start.
struct Ws {
    /// The provisioner's root.
    root: TempDir,
    p: ProcessProvisioner,
    target: Target,
}

impl Ws {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let p = provisioner(root.path(), &[]);
        let target = Target {
            id: WorkspaceId::new_v4(),
            workspace_dir: None,
        };
        let ws = Self { root, p, target };
        std::fs::create_dir_all(ws.host(FileRoot::Configs)).unwrap();
        std::fs::create_dir_all(ws.host(FileRoot::Workspace)).unwrap();
        ws
    }

    /// Where `root` is on the host.
    fn host(&self, root: FileRoot) -> PathBuf {
        let dir = self.root.path().join(self.target.id.to_string());
        match (root, &self.target.workspace_dir) {
            (FileRoot::Workspace, Some(shared)) => PathBuf::from(shared),
            (FileRoot::Workspace, None) => dir.join("workspace"),
            _ => dir.join("configs"),
        }
    }

    async fn list(
        &self,
        root: FileRoot,
        dir: &str,
        depth: u8,
    ) -> Result<Vec<FileEntry>, InsideError> {
        self.p
            .list_files(&self.target, root, &rel(dir), depth)
            .await
    }

    async fn paths(&self, root: FileRoot, dir: &str, depth: u8) -> Vec<String> {
        let entries = self.list(root, dir, depth).await.unwrap();
        entries.into_iter().map(|e| e.path).collect()
    }

    async fn read(&self, root: FileRoot, path: &str) -> Result<Vec<u8>, InsideError> {
        self.p
            .read_file(&self.target, root, &rel(path), 1 << 20)
            .await
    }

    async fn write(&self, root: FileRoot, path: &str, content: &[u8]) -> Result<(), InsideError> {
        self.p
            .write_files(&self.target, root, vec![(rel(path), content.to_vec())])
            .await
    }

    async fn delete(&self, root: FileRoot, path: &str) -> Result<(), InsideError> {
        self.p.delete_file(&self.target, root, &rel(path)).await
    }

    async fn exec(&self, cmd: &[&str]) -> ExecOutput {
        self.exec_with(cmd, |_| {}).await.unwrap()
    }

    async fn exec_with(
        &self,
        cmd: &[&str],
        adjust: impl FnOnce(&mut ExecRequest),
    ) -> Result<ExecOutput, InsideError> {
        let mut request = ExecRequest {
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            cwd: None,
            env: vec![],
            stdin: vec![],
            timeout: PATIENCE,
            output_limit: 1 << 20,
        };
        adjust(&mut request);
        tokio::time::timeout(PATIENCE * 2, self.p.exec(&self.target, request))
            .await
            .expect("exec returns")
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn refused(result: Result<impl std::fmt::Debug, InsideError>, needle: &str) {
    match result {
        Err(InsideError::Refused(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected a refusal ({needle}), got {other:?}"),
    }
}

/// Every byte value, NUL and invalid UTF-8 included.
fn binary() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend_from_slice(b"\0\0\xff\xfe\xc3\x28 tail");
    bytes
}

#[tokio::test]
async fn files_round_trip_in_both_roots() {
    let ws = Ws::new();
    for root in [FileRoot::Configs, FileRoot::Workspace] {
        ws.write(root, "a.txt", b"hello").await.unwrap();
        ws.write(root, "sub/deep/b.bin", &binary()).await.unwrap();
        assert_eq!(ws.read(root, "a.txt").await.unwrap(), b"hello");
        assert_eq!(ws.read(root, "sub/deep/b.bin").await.unwrap(), binary());
        // Exactly where the agent sees them, created with their parents.
        let host = ws.host(root);
        assert_eq!(
            std::fs::read(host.join("sub/deep/b.bin")).unwrap(),
            binary()
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&host.join("a.txt")), 0o644);
        assert!(host.join("sub/deep").is_dir());

        assert_eq!(ws.paths(root, "", 1).await, ["a.txt", "sub"]);
        let entries = ws.list(root, "", 3).await.unwrap();
        let summary: Vec<(&str, u64, bool)> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.size, e.dir))
            .collect();
        assert_eq!(
            summary,
            [
                ("a.txt", 5, false),
                ("sub", 0, true),
                ("sub/deep", 0, true),
                ("sub/deep/b.bin", binary().len() as u64, false),
            ]
        );
        assert_eq!(ws.paths(root, "sub", 2).await, ["deep", "deep/b.bin"]);

        // Replaced whole, in place, keeping an existing file's mode; no temporary file stays.
        std::fs::set_permissions(host.join("a.txt"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        ws.p.write_files(
            &ws.target,
            root,
            vec![(rel("a.txt"), b"bye".to_vec()), (rel("c.txt"), vec![])],
        )
        .await
        .unwrap();
        assert_eq!(ws.read(root, "a.txt").await.unwrap(), b"bye");
        assert_eq!(ws.read(root, "c.txt").await.unwrap(), b"");
        assert_eq!(mode(&host.join("a.txt")), 0o755);
        assert_eq!(ws.paths(root, "", 1).await, ["a.txt", "c.txt", "sub"]);

        // Deletes: a file, then a directory with everything in it.
        ws.delete(root, "a.txt").await.unwrap();
        assert_eq!(ws.read(root, "a.txt").await, Err(InsideError::NotFound));
        ws.delete(root, "sub").await.unwrap();
        assert!(!host.join("sub").exists());
        assert_eq!(ws.delete(root, "sub").await, Err(InsideError::NotFound));
        assert_eq!(ws.paths(root, "", 5).await, ["c.txt"]);
        refused(ws.delete(root, "").await, "root");
        assert!(host.is_dir());
    }
}

#[tokio::test]
async fn a_shared_host_directory_is_the_workspace_root() {
    let mut ws = Ws::new();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("README.md"), "# mine").unwrap();
    ws.target.workspace_dir = Some(shared.path().display().to_string());

    assert_eq!(ws.paths(FileRoot::Workspace, "", 1).await, ["README.md"]);
    ws.write(FileRoot::Workspace, "notes/n.md", b"n")
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(shared.path().join("notes/n.md")).unwrap(),
        b"n"
    );
    let out = ws.exec(&["pwd"]).await;
    let pwd = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(
        pwd.canonicalize().unwrap(),
        shared.path().canonicalize().unwrap()
    );
    // /configs is still the provisioner's.
    ws.write(FileRoot::Configs, "c.yaml", b"x").await.unwrap();
    assert!(
        ws.root
            .path()
            .join(ws.target.id.to_string())
            .join("configs/c.yaml")
            .is_file()
    );

    ws.target.workspace_dir = Some(shared.path().join("gone").display().to_string());
    assert!(matches!(
        ws.list(FileRoot::Workspace, "", 1).await,
        Err(InsideError::NotRunning(_))
    ));
}

#[tokio::test]
async fn listings_prune_skip_and_stay_in_order() {
    let ws = Ws::new();
    let host = ws.host(FileRoot::Workspace);
    for dir in LISTING_PRUNED_DIRS {
        std::fs::create_dir_all(host.join(dir).join("inner")).unwrap();
        std::fs::write(host.join(dir).join("inner/file"), "x").unwrap();
    }
    std::fs::write(host.join(".DS_Store"), "junk").unwrap();
    std::fs::create_dir_all(host.join("src/a/b/c/d/e/f")).unwrap();
    std::fs::write(host.join("src/main.rs"), "fn main() {}").unwrap();
    std::fs::write(host.join("Z.txt"), "upper").unwrap();
    symlink("src/main.rs", host.join("link.rs")).unwrap();
    symlink("src", host.join("link-dir")).unwrap();
    nix::unistd::mkfifo(
        &host.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(host.join("sock")).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(host.join("Z.txt"))
        .unwrap()
        .set_modified(when)
        .unwrap();

    let entries = ws.list(FileRoot::Workspace, "", 2).await.unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    // Pruned directories are listed but not entered; links, FIFOs, sockets and .DS_Store are
    // not listed; byte order.
    assert_eq!(
        paths,
        [
            ".git",
            "Z.txt",
            "__pycache__",
            "node_modules",
            "src",
            "src/a",
            "src/main.rs"
        ]
    );
    let z = entries.iter().find(|e| e.path == "Z.txt").unwrap();
    assert_eq!((z.size, z.modified), (5, Some(when)));
    assert!(entries.iter().all(|e| e.modified.is_some()));

    // Depth is bounded by the greatest depth; a pruned directory can still be listed itself.
    let deep = ws.paths(FileRoot::Workspace, "src", 200).await;
    assert_eq!(deep.last().map(String::as_str), Some("main.rs"));
    assert!(deep.contains(&"a/b/c/d/e".to_owned()), "{deep:?}");
    assert!(
        !deep.iter().any(|p| p.ends_with("/f")),
        "deeper than {MAX_LIST_DEPTH}: {deep:?}"
    );
    assert_eq!(ws.paths(FileRoot::Workspace, ".git", 1).await, ["inner"]);

    assert_eq!(
        ws.list(FileRoot::Workspace, "nope", 1).await,
        Err(InsideError::NotFound)
    );
    refused(
        ws.list(FileRoot::Workspace, "Z.txt", 1).await,
        "not a directory",
    );
    refused(
        ws.list(FileRoot::Workspace, "fifo", 1).await,
        "not a directory",
    );
    refused(
        ws.list(FileRoot::Workspace, "link-dir", 1).await,
        "symbolic link",
    );
}

/// A workspace with links planted by its agent: to `/etc`, to the provisioner's data root, to a
/// secret file in that root.
async fn planted() -> (Ws, PathBuf) {
    let ws = Ws::new();
    let secret = ws.root.path().join("secret.txt");
    std::fs::write(&secret, "server secret").unwrap();
    let host = ws.host(FileRoot::Workspace);
    symlink("/etc", host.join("etc")).unwrap();
    symlink(ws.root.path(), host.join("data")).unwrap();
    symlink(&secret, host.join("secret-link")).unwrap();
    std::fs::create_dir(host.join("real")).unwrap();
    symlink("../data", host.join("real/up")).unwrap();
    (ws, secret)
}

#[tokio::test]
async fn symbolic_links_are_never_followed() {
    let (ws, secret) = planted().await;
    let w = FileRoot::Workspace;
    let id = ws.target.id.to_string();

    for path in [
        "etc/hostname",
        "etc/passwd",
        "data/secret.txt",
        "secret-link",
        "real/up/secret.txt",
    ] {
        refused(ws.read(w, path).await, "symbolic link");
    }
    for dir in ["etc", "data", "real/up", &format!("data/{id}")] {
        refused(ws.list(w, dir, 1).await, "symbolic link");
    }
    for path in [
        "data/planted.txt",
        "real/up/planted.txt",
        &format!("data/{id}/configs/x"),
        "etc/berth-planted",
    ] {
        refused(ws.write(w, path, b"x").await, "symbolic link");
    }
    assert!(!ws.root.path().join("planted.txt").exists());
    assert!(!Path::new("/etc/berth-planted").exists());
    // (Deletes go through the data root only: the tests may run as root.)
    for path in [
        "data/secret.txt",
        "real/up/secret.txt",
        &format!("data/{id}"),
    ] {
        refused(ws.delete(w, path).await, "symbolic link");
    }
    assert!(secret.is_file());
    assert!(ws.root.path().join(&id).is_dir());

    // Links are not listed, and a listing of the real directory stops at them.
    assert_eq!(ws.paths(w, "", 5).await, ["real"]);

    // Writing onto a link's name replaces the link; its target is untouched.
    ws.write(w, "secret-link", b"mine now").await.unwrap();
    let host = ws.host(w);
    assert!(
        !std::fs::symlink_metadata(host.join("secret-link"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(host.join("secret-link")).unwrap(),
        b"mine now"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "server secret");

    // Deleting a link removes the link itself.
    ws.delete(w, "data").await.unwrap();
    ws.delete(w, "real").await.unwrap();
    assert!(!host.join("data").exists() && std::fs::symlink_metadata(host.join("data")).is_err());
    assert!(ws.root.path().join(&id).is_dir() && secret.is_file());

    // A directory tree with links inside is removed without following them.
    let decoy = tempfile::tempdir().unwrap();
    std::fs::write(decoy.path().join("keep.txt"), "keep").unwrap();
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    symlink(ws.root.path(), host.join("tree/sub/data")).unwrap();
    symlink(decoy.path(), host.join("tree/decoy")).unwrap();
    ws.delete(w, "tree").await.unwrap();
    assert!(!host.join("tree").exists());
    assert!(secret.is_file() && decoy.path().join("keep.txt").is_file());

    // The working directory of a command is resolved the same way.
    refused(
        ws.exec_with(&["pwd"], |r| r.cwd = Some("/workspace/etc".into()))
            .await,
        "symbolic link",
    );

    // An agent that swapped its configs directory for a link loses the configs root.
    let configs = ws.host(FileRoot::Configs);
    std::fs::remove_dir(&configs).unwrap();
    symlink("/", &configs).unwrap();
    refused(ws.list(FileRoot::Configs, "", 1).await, "symbolic link");
    refused(
        ws.read(FileRoot::Configs, "etc/hostname").await,
        "symbolic link",
    );
}

#[tokio::test]
async fn special_files_are_refused_without_blocking() {
    let ws = Ws::new();
    let host = ws.host(FileRoot::Workspace);
    nix::unistd::mkfifo(
        &host.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(host.join("sock")).unwrap();
    std::fs::create_dir(host.join("dir")).unwrap();
    // Nobody writes to the FIFO: an open for reading would wait forever.
    let read = tokio::time::timeout(PATIENCE, ws.read(FileRoot::Workspace, "fifo"))
        .await
        .expect("reading a FIFO does not block");
    refused(read, "FIFO");
    refused(ws.read(FileRoot::Workspace, "sock").await, "socket");
    refused(
        ws.read(FileRoot::Workspace, "dir").await,
        "path is a directory",
    );
    refused(
        ws.read(FileRoot::Workspace, "").await,
        "path is a directory",
    );
    refused(
        ws.write(FileRoot::Workspace, "dir", b"x").await,
        "path is a directory",
    );
    assert!(host.join("dir").is_dir());
}

#[tokio::test]
async fn limits_missing_files_and_unavailable_roots() {
    let ws = Ws::new();
    let w = FileRoot::Workspace;
    ws.write(w, "big.bin", &vec![7u8; 1000]).await.unwrap();
    assert_eq!(
        ws.p.read_file(&ws.target, w, &rel("big.bin"), 999).await,
        Err(InsideError::TooLarge {
            size: 1000,
            limit: 999
        })
    );
    assert_eq!(
        ws.p.read_file(&ws.target, w, &rel("big.bin"), 1000)
            .await
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(ws.read(w, "missing.txt").await, Err(InsideError::NotFound));
    assert_eq!(
        ws.read(w, "no/such/dir.txt").await,
        Err(InsideError::NotFound)
    );
    assert_eq!(
        ws.read(w, "big.bin/child").await,
        Err(InsideError::NotFound)
    );
    assert_eq!(
        ws.delete(w, "missing.txt").await,
        Err(InsideError::NotFound)
    );
    refused(
        ws.write(w, "big.bin/child.txt", b"x").await,
        "not a directory: big.bin",
    );
    refused(
        ws.write(w, "big.bin/a/b.txt", b"x").await,
        "not a directory",
    );

    // The files are written in order; the first failure stops the rest.
    let files = vec![
        (rel("first.txt"), b"1".to_vec()),
        (rel("big.bin/x"), b"2".to_vec()),
        (rel("third.txt"), b"3".to_vec()),
    ];
    assert!(ws.p.write_files(&ws.target, w, files).await.is_err());
    assert_eq!(ws.read(w, "first.txt").await.unwrap(), b"1");
    assert_eq!(ws.read(w, "third.txt").await, Err(InsideError::NotFound));

    for root in [FileRoot::Home, FileRoot::Plugins] {
        let unsupported = InsideError::Unsupported(format!(
            "root {root} is not available on the process backend: the agent runs on the host"
        ));
        assert_eq!(ws.list(root, "", 1).await, Err(unsupported.clone()));
        assert_eq!(ws.read(root, "x").await, Err(unsupported.clone()));
        assert_eq!(ws.write(root, "x", b"x").await, Err(unsupported.clone()));
        assert_eq!(ws.delete(root, "x").await, Err(unsupported));
    }

    // A workspace that never started (or was purged) has nothing on this host.
    let never = Target {
        id: WorkspaceId::new_v4(),
        workspace_dir: None,
    };
    let not_running = InsideError::NotRunning(
        "the workspace has no files on this host (never started, or purged)".into(),
    );
    for root in [FileRoot::Configs, FileRoot::Workspace] {
        assert_eq!(
            ws.p.list_files(&never, root, &RelPath::root(), 1).await,
            Err(not_running.clone())
        );
        assert_eq!(
            ws.p.write_files(&never, root, vec![(rel("x"), vec![])])
                .await,
            Err(not_running.clone())
        );
    }
    assert!(!ws.root.path().join(never.id.to_string()).exists());
    let request = ExecRequest {
        cmd: vec!["true".into()],
        cwd: None,
        env: vec![],
        stdin: vec![],
        timeout: PATIENCE,
        output_limit: 10,
    };
    assert_eq!(ws.p.exec(&never, request).await, Err(not_running.clone()));
    assert_eq!(
        ws.p.open_terminal(&never, TermSize::default()).await.err(),
        Some(not_running)
    );
}

#[tokio::test]
async fn files_of_a_started_agent_stay_readable_after_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(
        root.path(),
        &[("idle", "echo from-agent > made.txt; exec sleep 60")],
    );
    let mut req = request("idle");
    req.config_files
        .insert("config.yaml".into(), b"name: x\n".to_vec());
    let target = Target {
        id: req.workspace_id,
        workspace_dir: None,
    };
    p.start(req).await.unwrap();
    wait_for_file(
        &root
            .path()
            .join(target.id.to_string())
            .join("workspace/made.txt"),
    )
    .await;
    p.stop(target.id).await.unwrap();

    let (made, config) = (rel("made.txt"), rel("config.yaml"));
    assert_eq!(
        p.read_file(&target, FileRoot::Workspace, &made, 1024)
            .await
            .unwrap(),
        b"from-agent\n"
    );
    assert_eq!(
        p.read_file(&target, FileRoot::Configs, &config, 1024)
            .await
            .unwrap(),
        b"name: x\n"
    );

    p.purge(target.id).await.unwrap();
    assert!(matches!(
        p.read_file(&target, FileRoot::Configs, &config, 1024).await,
        Err(InsideError::NotRunning(_))
    ));
}

#[tokio::test]
async fn exec_runs_argv_with_its_streams_cwd_and_env() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.host(FileRoot::Workspace).join("sub")).unwrap();
    std::fs::write(ws.host(FileRoot::Workspace).join("file"), "").unwrap();

    let out = ws
        .exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .await;
    assert_eq!(
        out,
        ExecOutput {
            exit_code: Some(3),
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            truncated: false,
            timed_out: false,
        }
    );
    assert_eq!(ws.exec(&["true"]).await.exit_code, Some(0));
    // No shell in between: the argument is one word, `$HOME` is not expanded.
    let out = ws.exec(&["echo", "a  b", "$HOME", ";", "ls"]).await;
    assert_eq!(out.stdout, b"a  b $HOME ; ls\n");

    let out = ws
        .exec_with(&["cat"], |r| r.stdin = binary())
        .await
        .unwrap();
    assert_eq!(out.stdout, binary());
    // Without input, stdin is closed at once.
    assert_eq!(ws.exec(&["cat"]).await.stdout, b"");

    let pwd = |out: ExecOutput| PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let canonical = |root| ws.host(root).canonicalize().unwrap();
    assert_eq!(pwd(ws.exec(&["pwd"]).await), canonical(FileRoot::Workspace));
    for (cwd, expected) in [
        ("/workspace/sub", canonical(FileRoot::Workspace).join("sub")),
        ("/workspace", canonical(FileRoot::Workspace)),
        ("/configs", canonical(FileRoot::Configs)),
    ] {
        let out = ws
            .exec_with(&["pwd"], |r| r.cwd = Some(cwd.into()))
            .await
            .unwrap();
        assert_eq!(pwd(out), expected, "{cwd}");
    }
    for (cwd, needle) in [
        ("/etc", "must be /workspace or /configs"),
        ("/workspace/../etc", "must be"),
        ("/workspacex", "must be"),
        ("/home", "must be"),
        ("/workspace/missing", "not found"),
        ("/workspace/file", "not a directory"),
    ] {
        refused(
            ws.exec_with(&["pwd"], |r| r.cwd = Some(cwd.into())).await,
            needle,
        );
    }

    let out = ws
        .exec_with(&["env"], |r| {
            r.env = vec![
                ("EXTRA".into(), "1".into()),
                ("WORKSPACE_ID".into(), "mine".into()),
            ];
        })
        .await
        .unwrap();
    let env: std::collections::HashMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env.get("EXTRA").map(String::as_str), Some("1"));
    // The request's environment comes last, over the backend's.
    assert_eq!(env.get("WORKSPACE_ID").map(String::as_str), Some("mine"));
    assert_eq!(
        env.get("WORKSPACE_CONFIG_PATH").map(PathBuf::from),
        Some(ws.host(FileRoot::Configs))
    );
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    for key in env.keys() {
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "TMPDIR",
                "RUST_LOG",
                "EXTRA",
                "WORKSPACE_ID",
                "WORKSPACE_CONFIG_PATH"
            ]
            .contains(&key.as_str()),
            "{key} leaked into the command's environment"
        );
    }
    let out = ws.exec(&["sh", "-c", "echo $WORKSPACE_ID"]).await;
    assert_eq!(out.stdout, format!("{}\n", ws.target.id).into_bytes());

    refused(
        ws.exec_with(&["berth-no-such-command"], |_| {}).await,
        "command not found: berth-no-such-command",
    );
    refused(
        ws.exec_with(&["/nonexistent/tool"], |_| {}).await,
        "command not found: /nonexistent/tool",
    );
    refused(ws.exec_with(&[], |_| {}).await, "empty");
}

#[tokio::test]
async fn exec_output_is_bounded_and_fully_read() {
    let ws = Ws::new();
    // 1 MiB on each stream: far more than a pipe holds, so the rest must be read and dropped.
    let script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; echo done >&2; exit 4";
    let out = ws
        .exec_with(&["sh", "-c", script], |r| r.output_limit = 100)
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(4));
    assert_eq!(out.stdout, vec![0u8; 100]);
    assert_eq!(out.stderr, vec![0u8; 100]);
    assert!(out.truncated && !out.timed_out);
    let out = ws
        .exec_with(&["printf", "12345"], |r| r.output_limit = 5)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.truncated),
        (&b"12345"[..], false)
    );
}

/// Live (not zombie) processes in the process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .collect();
            fields[2] == pgid.to_string() && !["Z", "X"].contains(&fields[0])
        })
        .collect()
}

/// Whether `pid` runs (a zombie, killed and waiting to be reaped by init, does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .next()
            .unwrap();
        state != "Z" && state != "X"
    })
}

fn numbers(out: &[u8]) -> Vec<i32> {
    String::from_utf8_lossy(out)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group() {
    let ws = Ws::new();
    let out = ws
        .exec_with(
            &["sh", "-c", "echo $$; sleep 30 & echo $!; sleep 30"],
            |r| {
                r.timeout = Duration::from_secs(1);
            },
        )
        .await
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, None);
    let pids = numbers(&out.stdout);
    assert_eq!(pids.len(), 2, "{out:?}");
    assert!(
        group_members(pids[0]).is_empty(),
        "left: {:?}",
        group_members(pids[0])
    );
    assert!(!running(pids[1]));
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_the_exec() {
    let ws = Ws::new();
    let out = ws
        .exec_with(
            &["sh", "-c", "echo $$; sleep 30 & echo $!; echo done"],
            |r| {
                r.timeout = PATIENCE;
            },
        )
        .await
        .unwrap();
    // It returned with the shell's exit, not at the timeout, and the child is gone.
    assert_eq!((out.exit_code, out.timed_out), (Some(0), false));
    assert!(out.stdout.ends_with(b"done\n"));
    let pids = numbers(&out.stdout);
    assert!(group_members(pids[0]).is_empty());
    assert!(!running(pids[1]));
}

/// Reads the terminal's output until it contains `needle`; everything read so far.
async fn read_until(term: &mut Terminal, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, term.output.recv())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
            .unwrap_or_else(|| panic!("output ended without {needle:?}: {seen:?}"));
        assert!(chunk.len() <= berth_provision::inside::TERMINAL_CHUNK);
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads the rest of the output, until it ends.
async fn read_to_end(term: &mut Terminal, seen: &mut String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Some(chunk) = tokio::time::timeout_at(deadline, term.output.recv())
        .await
        .expect("the output ends")
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Runs `line` in the terminal's shell and reads until it has finished (a marker only the
/// shell's output has: the PTY echoes the line itself).
async fn run(term: &mut Terminal, seen: &mut String, line: &str) {
    let n = seen.len();
    send(term, &format!("{line}; echo @@$(({n}+1))@@\n")).await;
    read_until(term, seen, &format!("@@{}@@", n + 1)).await;
}

async fn send(term: &Terminal, text: &str) {
    term.input
        .send(TerminalInput::Data(text.as_bytes().to_vec()))
        .await
        .unwrap();
}

/// The number after the first `marker` followed by a digit (the PTY echoes the command line
/// itself, with `$!` and `$$` unexpanded).
fn number_after(seen: &str, marker: &str) -> i32 {
    seen.match_indices(marker)
        .find_map(|(at, _)| {
            let digits: String = seen[at + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {marker}<n> in {seen:?}"))
}

#[tokio::test]
async fn a_terminal_runs_a_shell_with_a_tty_until_it_exits() {
    let ws = Ws::new();
    let mut term =
        ws.p.open_terminal(
            &ws.target,
            TermSize {
                rows: 30,
                cols: 100,
            },
        )
        .await
        .unwrap();
    let mut seen = String::new();
    send(
        &term,
        "echo hel''lo; echo ws=$WORKSPACE_ID term=$TERM; stty size; pwd\n",
    )
    .await;
    read_until(&mut term, &mut seen, "hello").await;
    read_until(
        &mut term,
        &mut seen,
        &format!("ws={} term=xterm-256color", ws.target.id),
    )
    .await;
    read_until(&mut term, &mut seen, "30 100").await;
    let workspace = ws.host(FileRoot::Workspace).canonicalize().unwrap();
    read_until(&mut term, &mut seen, &workspace.display().to_string()).await;

    term.input
        .send(TerminalInput::Resize(TermSize {
            rows: 40,
            cols: 120,
        }))
        .await
        .unwrap();
    send(&term, "stty size\n").await;
    read_until(&mut term, &mut seen, "40 120").await;

    // The shell owns the terminal: it leads its session, which the terminal belongs to, and
    // at the prompt its group is the terminal's foreground group.
    run(&mut term, &mut seen, "echo pid=$$").await;
    let shell = number_after(&seen, "pid=");
    let stat = std::fs::read_to_string(format!("/proc/{shell}/stat")).unwrap();
    let fields: Vec<i64> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .skip(1)
        .take(5)
        .map(|f| f.parse().unwrap())
        .collect();
    let (pgrp, session, tty, tpgid) = (fields[1], fields[2], fields[3], fields[4]);
    assert_eq!(
        (pgrp, session),
        (i64::from(shell), i64::from(shell)),
        "{stat}"
    );
    assert_ne!(tty, 0, "the shell has a controlling terminal: {stat}");
    assert_eq!(tpgid, pgrp, "{stat}");

    send(&term, "exit 7\n").await;
    read_to_end(&mut term, &mut seen).await;
    let code = tokio::time::timeout(PATIENCE, term.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(7), "{seen}");
}

#[tokio::test]
async fn dropping_the_input_ends_the_session_and_everything_in_it() {
    let ws = Ws::new();
    let mut term =
        ws.p.open_terminal(&ws.target, TermSize::default())
            .await
            .unwrap();
    let mut seen = String::new();
    // One job that ignores the hangup, one that does not: both go.
    run(
        &mut term,
        &mut seen,
        "sleep 300 & echo bg=$!; (trap '' HUP; exec sleep 301) & echo nohup=$!; echo sh=$$",
    )
    .await;
    let (bg, nohup) = (number_after(&seen, "bg="), number_after(&seen, "nohup="));
    let shell = number_after(&seen, "sh=");
    assert!(running(bg) && running(nohup) && running(shell), "{seen}");

    let Terminal {
        input,
        mut output,
        exit,
    } = term;
    drop(input);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::timeout_at(deadline, output.recv())
        .await
        .expect("the output ends")
        .is_some()
    {}
    // Killed by the hangup: no exit code.
    assert_eq!(
        tokio::time::timeout(PATIENCE, exit).await.unwrap().unwrap(),
        None
    );
    for pid in [shell, bg, nohup] {
        assert!(!running(pid), "{pid} survived the session");
    }
}

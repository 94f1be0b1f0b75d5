//! Looking inside a Docker workspace (files, exec, terminal) against the real daemon, with the
//! test image's busybox as the workspace's tools: round trips of exact bytes, the refusals
//! (symbolic links, FIFOs, sizes, a stopped container), exit codes and streams, timeouts that
//! leave no process behind, and terminals that end with their client.

use std::time::{Duration, SystemTime};

use berth_provision::{
    ExecOutput, ExecRequest, FileRoot, InsideError, Provisioner, RelPath, Target, TermSize,
    TerminalInput,
};

use super::*;

/// A running workspace of the test image (tier 2: `/configs` and a `/workspace` volume).
struct Inside {
    p: DockerProvisioner,
    target: Target,
    _registry: FakeRegistry,
    sandbox: Sandbox,
}

impl Inside {
    async fn start(tier: u8) -> Self {
        let sandbox = Sandbox::new().await;
        let registry = FakeRegistry::bind(sandbox.gateway).await;
        let p = sandbox.provisioner().await;
        let req = sandbox.request(tier, &registry.url());
        let id = req.workspace_id;
        p.start(req).await.expect("start");
        Self {
            p,
            target: Target {
                id,
                workspace_dir: None,
            },
            _registry: registry,
            sandbox,
        }
    }

    async fn exec(&self, request: ExecRequest) -> ExecOutput {
        self.p
            .exec(&self.target, request)
            .await
            .expect("exec in the workspace")
    }

    /// Runs `argv` with the defaults; panics unless it could be run.
    async fn run(&self, argv: &[&str]) -> ExecOutput {
        self.exec(request(argv)).await
    }

    /// Runs `argv` and expects exit code 0; returns its stdout as text.
    async fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv).await;
        assert_eq!(
            out.exit_code,
            Some(0),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn write(&self, root: FileRoot, files: &[(&str, &[u8])]) -> Result<(), InsideError> {
        let files = files.iter().map(|(p, c)| (rel(p), c.to_vec())).collect();
        self.p.write_files(&self.target, root, files).await
    }

    async fn read(&self, root: FileRoot, path: &str) -> Result<Vec<u8>, InsideError> {
        self.p
            .read_file(&self.target, root, &rel(path), 1024 * 1024)
            .await
    }

    /// (path, size, dir) of a listing.
    async fn list(
        &self,
        root: FileRoot,
        dir: &str,
        depth: u8,
    ) -> Result<Vec<(String, u64, bool)>, InsideError> {
        let entries = self
            .p
            .list_files(&self.target, root, &rel(dir), depth)
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| (e.path, e.size, e.dir))
            .collect())
    }

    /// The live processes of the container as (pid, command name), without zombies and without
    /// this probe itself.
    async fn processes(&self) -> Vec<(u32, String)> {
        let script = r#"echo $$; for d in /proc/[0-9]*; do read -r l 2>/dev/null < "$d/stat" && echo "$l"; done"#;
        let out = self.ok(&["sh", "-c", script]).await;
        let mut lines = out.lines();
        let me: u32 = lines.next().unwrap().parse().unwrap();
        lines
            .filter_map(|l| {
                let (pid, rest) = l.split_once(" (")?;
                let (comm, rest) = rest.rsplit_once(") ")?;
                let state = rest.split_whitespace().next()?;
                let pid: u32 = pid.parse().ok()?;
                (pid != me && state != "Z").then(|| (pid, comm.to_owned()))
            })
            .collect()
    }

    /// Waits until the container runs nothing but its init and agent.
    async fn wait_for_only_the_agent(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let procs = self.processes().await;
            // Docker's init (pid 1) and the agent it started.
            if procs
                .iter()
                .all(|(pid, comm)| *pid == 1 || comm == "berth-agent")
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "processes left in the container: {procs:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: argv.iter().map(|s| (*s).to_owned()).collect(),
        cwd: None,
        env: vec![],
        stdin: vec![],
        timeout: PATIENCE,
        output_limit: 1024 * 1024,
    }
}

fn refused(result: Result<impl std::fmt::Debug, InsideError>, words: &str) {
    match result {
        Err(InsideError::Refused(message)) if message.contains(words) => {}
        other => panic!("expected a refusal saying {words:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn files_round_trip_exactly_in_configs_and_workspace() {
    let w = Inside::start(2).await;
    let before = SystemTime::now() - Duration::from_secs(2);
    let binary: &[u8] = &[0, 0xff, 0xfe, b'\n', 0, 0xc3, 0x28, b' '];
    let padded: &[u8] = b"  padded both ends \n\n\t";
    w.write(
        FileRoot::Configs,
        &[("notes.md", padded), ("deep/er/bin.dat", binary)],
    )
    .await
    .expect("write into /configs");
    let after = SystemTime::now() + Duration::from_secs(2);

    assert_eq!(w.read(FileRoot::Configs, "notes.md").await.unwrap(), padded);
    assert_eq!(
        w.read(FileRoot::Configs, "deep/er/bin.dat").await.unwrap(),
        binary
    );
    // The provisioner's own files are there too, and nothing temporary is left.
    assert_eq!(
        w.list(FileRoot::Configs, "", 1).await.unwrap(),
        [
            (
                ".auth_token".into(),
                u64::try_from(format!("tok-{}", w.target.id).len()).unwrap(),
                false
            ),
            ("config.yaml".into(), 45, false),
            ("deep".into(), 0, true),
            ("notes.md".into(), 22, false),
        ]
    );
    assert_eq!(
        w.list(FileRoot::Configs, "deep", 5).await.unwrap(),
        [("er".into(), 0, true), ("er/bin.dat".into(), 8, false)]
    );
    let entries =
        w.p.list_files(&w.target, FileRoot::Configs, &rel("deep/er"), 1)
            .await
            .unwrap();
    let modified = entries[0].modified.expect("an mtime");
    assert!(before <= modified && modified <= after, "{modified:?}");
    // Owned by the agent user, 0644 files and 0755 created directories.
    assert_eq!(
        w.ok(&[
            "stat",
            "-c",
            "%n %u:%g %a",
            "/configs/deep",
            "/configs/deep/er",
            "/configs/deep/er/bin.dat"
        ])
        .await,
        "/configs/deep 1000:1000 755\n/configs/deep/er 1000:1000 755\n/configs/deep/er/bin.dat 1000:1000 644\n"
    );

    // A replace is whole: shorter content leaves nothing of the longer one.
    w.write(FileRoot::Configs, &[("notes.md", b"short")])
        .await
        .unwrap();
    assert_eq!(
        w.read(FileRoot::Configs, "notes.md").await.unwrap(),
        b"short"
    );
    assert!(
        !w.ok(&["ls", "-a", "/configs"]).await.contains("berth-tmp"),
        "a temporary file was left"
    );

    // /workspace, with an empty file and a name with spaces and quotes.
    w.write(
        FileRoot::Workspace,
        &[("src/main.rs", b"fn main() {}\n"), ("src/it's a file", b"")],
    )
    .await
    .unwrap();
    assert_eq!(
        w.list(FileRoot::Workspace, "", 2).await.unwrap(),
        [
            ("src".into(), 0, true),
            ("src/it's a file".into(), 0, false),
            ("src/main.rs".into(), 13, false),
        ]
    );
    assert_eq!(
        w.read(FileRoot::Workspace, "src/it's a file")
            .await
            .unwrap(),
        b""
    );

    // Deleting a directory takes what is in it; gone is gone.
    w.p.delete_file(&w.target, FileRoot::Configs, &rel("deep"))
        .await
        .unwrap();
    assert_eq!(
        w.read(FileRoot::Configs, "deep/er/bin.dat").await,
        Err(InsideError::NotFound)
    );
    assert_eq!(
        w.p.delete_file(&w.target, FileRoot::Configs, &rel("deep"))
            .await,
        Err(InsideError::NotFound)
    );
    refused(
        w.p.delete_file(&w.target, FileRoot::Workspace, &RelPath::root())
            .await,
        "root directory",
    );
    w.p.delete_file(&w.target, FileRoot::Workspace, &rel("src/main.rs"))
        .await
        .unwrap();
    assert_eq!(
        w.list(FileRoot::Workspace, "src", 1).await.unwrap(),
        [("it's a file".into(), 0, false)]
    );
}

#[tokio::test]
async fn a_replaced_file_is_never_seen_torn_from_inside() {
    let w = Inside::start(2).await;
    const SIZE: usize = 1024 * 1024;
    w.write(FileRoot::Workspace, &[("swap.bin", &[b'a'; SIZE])])
        .await
        .unwrap();
    // A reader inside the container checks the size over and over while the file is replaced:
    // written in place, it would see the file missing or half written at some point.
    let reader = format!(
        "i=0; while [ $i -lt 400 ]; do n=$(wc -c < /workspace/swap.bin 2>/dev/null); \
         [ \"$n\" = {SIZE} ] || echo \"torn:$n\"; i=$((i+1)); done; echo read"
    );
    let writes = async {
        for round in 0..20u8 {
            let content = vec![b'a' + round % 2; SIZE];
            w.write(FileRoot::Workspace, &[("swap.bin", &content)])
                .await
                .unwrap();
        }
    };
    let argv = ["sh", "-c", reader.as_str()];
    let (seen, ()) = tokio::join!(w.ok(&argv), writes);
    assert_eq!(seen, "read\n");
    assert!(
        !w.ok(&["ls", "-a", "/workspace"])
            .await
            .contains("berth-tmp")
    );
}

#[tokio::test]
async fn a_large_batch_is_written_whole_even_where_the_agent_may_not_rename() {
    let w = Inside::start(2).await;
    // A directory the agent user may not write: its rename fails, and that file is written in
    // place by the daemon instead (the fallback), while the others are renamed in batches.
    w.ok(&["mkdir", "/workspace/ro"]).await;
    w.ok(&["chmod", "555", "/workspace/ro"]).await;
    let probe = w.run(&["touch", "/workspace/ro/probe"]).await;
    assert_ne!(
        probe.exit_code,
        Some(0),
        "the agent user can still write ro/"
    );
    let mut files: Vec<(String, Vec<u8>)> = (0..39)
        .map(|i| {
            (
                format!("many/sub{}/f{i:02}", i % 3),
                format!("file {i}").into_bytes(),
            )
        })
        .collect();
    files.insert(20, ("ro/inside.txt".into(), b"written anyway".to_vec()));
    let batch: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    w.write(FileRoot::Workspace, &batch).await.unwrap();
    for (path, content) in &files {
        assert_eq!(
            &w.read(FileRoot::Workspace, path).await.unwrap(),
            content,
            "{path}"
        );
    }
    assert_eq!(
        w.list(FileRoot::Workspace, "many", 2).await.unwrap().len(),
        42
    );
    assert_eq!(
        w.ok(&["find", "/workspace", "-name", "*berth-tmp*"]).await,
        "",
        "temporary files were left"
    );
}

#[tokio::test]
async fn file_refusals_say_what_is_wrong() {
    let w = Inside::start(2).await;
    w.write(
        FileRoot::Workspace,
        &[("big.bin", &[7u8; 3000]), ("dir/x", b"x")],
    )
    .await
    .unwrap();

    assert_eq!(
        w.p.read_file(&w.target, FileRoot::Workspace, &rel("big.bin"), 2999)
            .await,
        Err(InsideError::TooLarge {
            size: 3000,
            limit: 2999
        })
    );
    assert_eq!(
        w.p.read_file(&w.target, FileRoot::Workspace, &rel("big.bin"), 3000)
            .await
            .unwrap()
            .len(),
        3000
    );
    assert_eq!(
        w.read(FileRoot::Workspace, "missing").await,
        Err(InsideError::NotFound)
    );
    assert_eq!(
        w.read(FileRoot::Workspace, "big.bin/under-a-file").await,
        Err(InsideError::NotFound)
    );
    refused(
        w.read(FileRoot::Workspace, "dir").await,
        "path is a directory",
    );
    refused(
        w.list(FileRoot::Workspace, "big.bin", 1).await,
        "not a directory",
    );
    assert_eq!(
        w.list(FileRoot::Workspace, "nowhere", 1).await,
        Err(InsideError::NotFound)
    );
    // The test image has no /home or /plugins.
    assert_eq!(
        w.list(FileRoot::Home, "", 1).await,
        Err(InsideError::NotFound)
    );
    refused(
        w.write(FileRoot::Workspace, &[("big.bin/x", b"x")]).await,
        "a parent of big.bin/x is a file: big.bin",
    );
    refused(
        w.write(FileRoot::Workspace, &[("dir", b"x")]).await,
        "path is a directory",
    );
    refused(
        w.write(FileRoot::Workspace, &[("a", b"x"), ("a/b", b"y")])
            .await,
        "both a file and a directory",
    );
    // Nothing of a refused batch was written.
    assert_eq!(
        w.read(FileRoot::Workspace, "a").await,
        Err(InsideError::NotFound)
    );
}

#[tokio::test]
async fn symbolic_links_and_fifos_inside_the_container_are_refused() {
    let w = Inside::start(2).await;
    w.ok(&["ln", "-s", "/etc", "/workspace/evil"]).await;
    w.ok(&["ln", "-s", "/etc/passwd", "/workspace/pw"]).await;
    w.ok(&["mkfifo", "/workspace/fifo"]).await;
    w.ok(&["mkdir", "/workspace/real"]).await;

    refused(
        w.read(FileRoot::Workspace, "evil/passwd").await,
        "path crosses a symbolic link: evil",
    );
    refused(w.read(FileRoot::Workspace, "pw").await, "symbolic link: pw");
    refused(
        w.list(FileRoot::Workspace, "evil", 1).await,
        "symbolic link",
    );
    refused(
        w.write(FileRoot::Workspace, &[("evil/planted", b"x")])
            .await,
        "symbolic link: evil",
    );
    refused(
        w.write(FileRoot::Workspace, &[("pw", b"x")]).await,
        "symbolic link",
    );
    refused(w.read(FileRoot::Workspace, "fifo").await, "FIFO");
    refused(
        w.p.delete_file(&w.target, FileRoot::Workspace, &rel("evil/passwd"))
            .await,
        "symbolic link",
    );
    assert!(!w.ok(&["ls", "/etc"]).await.contains("planted"));
    // A listing leaves links and FIFOs out.
    assert_eq!(
        w.list(FileRoot::Workspace, "", 1).await.unwrap(),
        [("real".into(), 0, true)]
    );
    // Deleting a link removes the link, not what it points at.
    w.p.delete_file(&w.target, FileRoot::Workspace, &rel("pw"))
        .await
        .unwrap();
    assert!(w.ok(&["cat", "/etc/passwd"]).await.contains("agent"));
    assert_eq!(
        w.read(FileRoot::Workspace, "pw").await,
        Err(InsideError::NotFound)
    );
}

#[tokio::test]
async fn exec_runs_an_argv_with_its_streams_exit_code_cwd_and_env() {
    let w = Inside::start(2).await;

    assert_eq!(w.run(&["sh", "-c", "exit 3"]).await.exit_code, Some(3));
    let out = w.run(&["sh", "-c", "echo ' out '; echo ' err ' >&2"]).await;
    assert_eq!(out.stdout, b" out \n");
    assert_eq!(out.stderr, b" err \n");
    assert!(!out.truncated && !out.timed_out);

    // The argv arrives untouched: no shell sees it.
    assert_eq!(
        w.ok(&["printf", "%s|", "a b", "$(id)", "it's", ""]).await,
        "a b|$(id)|it's||"
    );

    let mut cat = request(&["cat"]);
    cat.stdin = b"line 1\n\0\xffbinary".to_vec();
    let out = w.exec(cat).await;
    assert_eq!(out.stdout, b"line 1\n\0\xffbinary");
    assert_eq!(out.exit_code, Some(0));
    // No stdin is an empty one, closed at once.
    assert_eq!(w.ok(&["cat"]).await, "");

    assert_eq!(w.ok(&["pwd"]).await, "/workspace\n");
    let mut pwd = request(&["pwd"]);
    pwd.cwd = Some("/configs".into());
    assert_eq!(w.exec(pwd).await.stdout, b"/configs\n");

    let mut env = request(&["env"]);
    env.env = vec![("BERTH_TEST".into(), "a value with spaces".into())];
    let out = String::from_utf8(w.exec(env).await.stdout).unwrap();
    assert!(
        out.lines().any(|l| l == "BERTH_TEST=a value with spaces"),
        "{out}"
    );
    // As the image's default user.
    assert_eq!(w.ok(&["id", "-u"]).await, "1000\n");

    let mut limited = request(&["sh", "-c", "yes | head -n 100000; echo done >&2"]);
    limited.output_limit = 100;
    let out = w.exec(limited).await;
    assert_eq!(out.stdout, "y\n".repeat(50).as_bytes());
    assert_eq!(out.stderr, b"done\n");
    assert!(out.truncated);
    assert_eq!(out.exit_code, Some(0));

    let out = w.run(&["no-such-program"]).await;
    assert_eq!(out.exit_code, Some(127));
    assert!(!out.stderr.is_empty());

    let mut relative = request(&["pwd"]);
    relative.cwd = Some("configs".into());
    refused(w.p.exec(&w.target, relative).await, "not an absolute path");
    let mut missing = request(&["pwd"]);
    missing.cwd = Some("/nowhere".into());
    refused(w.p.exec(&w.target, missing).await, "does not exist");
    refused(w.p.exec(&w.target, request(&[])).await, "no command");
}

#[tokio::test]
async fn an_exec_past_its_timeout_is_killed_with_everything_it_started() {
    let w = Inside::start(2).await;
    let mut slow = request(&["sh", "-c", "sleep 31 & echo started; exec sleep 30"]);
    slow.timeout = Duration::from_secs(1);
    let out = w.exec(slow).await;
    assert!(out.timed_out);
    assert_eq!(out.exit_code, None);
    assert_eq!(out.stdout, b"started\n");
    w.wait_for_only_the_agent().await;
}

#[tokio::test]
async fn a_terminal_echoes_resizes_and_exits_with_the_shells_code() {
    let w = Inside::start(2).await;
    let mut term =
        w.p.open_terminal(&w.target, TermSize::default())
            .await
            .expect("open a terminal");
    let mut seen = Vec::new();

    // The typed line is echoed as `hel''lo`; only the command's output reads `hello`.
    send(&term.input, b"echo hel''lo\n").await;
    read_until(&mut term.output, &mut seen, "hello\r\n").await;
    send(&term.input, b"stty size\n").await;
    read_until(&mut term.output, &mut seen, "24 80\r\n").await;
    term.input
        .send(TerminalInput::Resize(TermSize {
            rows: 40,
            cols: 120,
        }))
        .await
        .unwrap();
    send(&term.input, b"stty size\n").await;
    read_until(&mut term.output, &mut seen, "40 120\r\n").await;
    // Output that starts with bytes 0, 1, 2 passes through unharmed (no framing is guessed).
    send(
        &term.input,
        b"printf '\\000\\000\\000\\000\\377\\377\\377\\377'; echo after-''zeros\n",
    )
    .await;
    read_until(&mut term.output, &mut seen, "after-zeros\r\n").await;
    let raw = [0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    assert!(
        seen.windows(raw.len()).any(|w| w == raw),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        !String::from_utf8_lossy(&seen).contains("berth-pid"),
        "the pid line leaked into the output"
    );

    send(&term.input, b"exit 7\n").await;
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = term.output.recv().await {
            assert!(chunk.len() <= berth_provision::inside::TERMINAL_CHUNK);
        }
    })
    .await;
    assert!(ended.is_ok(), "the output did not end after exit");
    assert_eq!(term.exit.await.unwrap(), Some(7));
    w.wait_for_only_the_agent().await;
}

#[tokio::test]
async fn dropping_a_terminals_input_kills_its_shell_and_jobs() {
    let w = Inside::start(2).await;
    let mut term =
        w.p.open_terminal(&w.target, TermSize::default())
            .await
            .expect("open a terminal");
    let mut seen = Vec::new();
    send(
        &term.input,
        b"sleep 1000 & sleep 1001 & echo jobs-started\n",
    )
    .await;
    read_until(&mut term.output, &mut seen, "jobs-started\r\n").await;
    let running: Vec<String> = w.processes().await.into_iter().map(|p| p.1).collect();
    assert_eq!(
        running.iter().filter(|c| *c == "sleep").count(),
        2,
        "{running:?}"
    );

    drop(term.input);
    w.wait_for_only_the_agent().await;
    assert_eq!(term.exit.await.ok().flatten(), None);
}

#[tokio::test]
async fn a_tier_1_workspace_execs_in_configs_and_writes_its_volume() {
    let w = Inside::start(1).await;
    assert_eq!(w.ok(&["pwd"]).await, "/configs\n");
    w.write(FileRoot::Configs, &[("edited.md", b"on a read-only root")])
        .await
        .unwrap();
    assert_eq!(
        w.read(FileRoot::Configs, "edited.md").await.unwrap(),
        b"on a read-only root"
    );
    // Not mounted at tier 1: the image's own (empty) directory.
    assert_eq!(w.list(FileRoot::Workspace, "", 1).await, Ok(vec![]));
}

#[tokio::test]
async fn a_stopped_removed_or_unknown_workspace_is_not_running() {
    let w = Inside::start(2).await;
    let unknown = Target {
        id: berth_domain::WorkspaceId::new_v4(),
        workspace_dir: None,
    };
    for state in ["stopped", "removed", "unknown"] {
        let target = match state {
            "stopped" => {
                w.sandbox
                    .docker
                    .stop_container(&container_name(w.target.id), None)
                    .await
                    .unwrap();
                &w.target
            }
            "removed" => {
                w.p.stop(w.target.id).await.unwrap();
                &w.target
            }
            _ => &unknown,
        };
        let not_running = |r: Result<(), InsideError>| match r {
            Err(InsideError::NotRunning(m)) => {
                assert_eq!(m, "the workspace's container is not running");
            }
            other => panic!("expected NotRunning, got {other:?}"),
        };
        let p = &w.p;
        not_running(
            p.list_files(target, FileRoot::Configs, &RelPath::root(), 1)
                .await
                .map(drop),
        );
        not_running(
            p.read_file(target, FileRoot::Configs, &rel("config.yaml"), 10)
                .await
                .map(drop),
        );
        not_running(
            p.write_files(target, FileRoot::Configs, vec![(rel("x"), vec![])])
                .await,
        );
        not_running(p.delete_file(target, FileRoot::Configs, &rel("x")).await);
        not_running(p.exec(target, request(&["true"])).await.map(drop));
        not_running(p.open_terminal(target, TermSize::default()).await.map(drop));
    }
}

async fn send(input: &tokio::sync::mpsc::Sender<TerminalInput>, bytes: &[u8]) {
    input
        .send(TerminalInput::Data(bytes.to_vec()))
        .await
        .expect("the terminal takes input");
}

/// Reads terminal output into `seen` until it holds `text` after what was seen before.
async fn read_until(
    output: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    seen: &mut Vec<u8>,
    text: &str,
) {
    let start = seen.len();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            if seen[start..]
                .windows(text.len())
                .any(|w| w == text.as_bytes())
            {
                return;
            }
            match output.recv().await {
                Some(chunk) => seen.extend_from_slice(&chunk),
                None => panic!(
                    "the terminal ended before {text:?}; it said {:?}",
                    String::from_utf8_lossy(seen)
                ),
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {text:?} in the terminal's output: {:?}",
        String::from_utf8_lossy(seen)
    );
}

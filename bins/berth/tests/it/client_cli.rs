//! The command-line client end to end: the built `berth` binary's client commands against a
//! real `berth serve` with its default flags (no `--dev`; the process backend runs the demo
//! agent), from the directory the server runs in, so the CLI finds the admin token in
//! `./berth-data` as a user's second terminal would.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::server::{Server, berth_release_command, release_binary, wait_for};

/// A finished CLI run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success; the run.
    fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what}: exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// `berth <args>` in `dir` against `server` (`BERTH_URL`), no token given.
fn cli_command(server: &Server, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = berth_release_command();
    cmd.current_dir(dir)
        .env("BERTH_URL", &server.base)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn berth(server: &Server, dir: &Path, args: &[&str]) -> Run {
    Run::from(cli_command(server, dir, args).output().expect("run berth"))
}

/// A running `berth events --follow …` whose output lines are collected as they come; killed
/// when dropped.
struct Follower {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn spawn(server: &Server, dir: &Path, args: &[&str]) -> Follower {
        let mut child = cli_command(server, dir, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("berth {args:?}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("lines").push(line);
                }
            })
        };
        Follower {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The lines printed so far.
    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[tokio::test]
async fn a_session_with_the_cli() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let server = Server::start(&dir.join("berth-data"), &[]).await;

    let templates = berth(&server, dir, &["templates"]).ok("templates");
    assert!(templates.stdout.starts_with("ID "), "{}", templates.stdout);
    assert!(
        templates
            .stdout
            .lines()
            .any(|l| l.starts_with("echo ") && l.contains("echo/echo-1")),
        "{}",
        templates.stdout
    );

    // Create and wait: the transitions on stderr, the online workspace on stdout.
    let created = berth(
        &server,
        dir,
        &[
            "workspace",
            "create",
            "demo",
            "--template",
            "echo",
            "--wait",
        ],
    )
    .ok("create --wait");
    assert!(
        created.stderr.contains("provisioning"),
        "{}",
        created.stderr
    );
    assert!(created.stderr.contains("✓ online"), "{}", created.stderr);
    assert!(created.stdout.contains("status:"), "{}", created.stdout);
    let id = created
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().to_owned())
        .expect("the id line");
    assert!(
        created
            .stdout
            .lines()
            .any(|l| l.starts_with("status:") && l.ends_with("online")),
        "{}",
        created.stdout
    );

    // The list: a table for people, the server's JSON for scripts.
    let table = berth(&server, dir, &["workspace", "list"]).ok("list");
    let mut lines = table.stdout.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("ID") && header.contains("NAME") && header.contains("STATUS"));
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with(&id) && row.contains("demo") && row.contains("online"),
        "{row}"
    );
    let json = berth(&server, dir, &["workspace", "list", "--output", "json"]).ok("list json");
    let list = json.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "online");
    let one = berth(&server, dir, &["workspace", "get", "demo", "-o", "json"]).ok("get by name");
    assert_eq!(one.json()["id"], id.as_str());

    // A message to the agent, and its reply.
    let reply = berth(&server, dir, &["message", "demo", "hello"]).ok("message");
    assert_eq!(reply.stdout, "echo: hello\n");

    // Events: the latest, then following a restart as it happens.
    let events = berth(&server, dir, &["events", "--workspace", &id]).ok("events");
    assert!(
        events.stdout.contains("WORKSPACE_ONLINE"),
        "{}",
        events.stdout
    );
    let follow = Follower::spawn(
        &server,
        dir,
        &["events", "--follow", "-o", "json", "--limit", "1"],
    );
    let restarted = berth(&server, dir, &["workspace", "restart", "demo", "--wait"]).ok("restart");
    assert!(
        restarted.stderr.contains("✓ online"),
        "{}",
        restarted.stderr
    );
    let seen = wait_for(
        "the follower to print the restart",
        Duration::from_secs(20),
        || {
            let lines = follow.lines();
            async move {
                let events: Vec<Value> = lines
                    .iter()
                    .map(|l| serde_json::from_str(l).expect("a JSON line per event"))
                    .collect();
                let types: Vec<&str> = events
                    .iter()
                    .filter_map(|e| e["event_type"].as_str())
                    .collect();
                if types.contains(&"WORKSPACE_PROVISIONING") && types.contains(&"WORKSPACE_ONLINE")
                {
                    Ok(events)
                } else {
                    Err(format!("{types:?}"))
                }
            }
        },
    )
    .await;
    assert!(
        seen.iter().all(|e| e["workspace_id"] == id.as_str()),
        "{seen:?}"
    );
    drop(follow);

    // Following one workspace (its SSE stream): a message's events show up as they happen.
    let follow = Follower::spawn(
        &server,
        dir,
        &["events", "-f", "-w", "demo", "--limit", "1"],
    );
    // The first line is the latest event: the follower is connected once it is there.
    wait_for("the follower's first line", Duration::from_secs(20), || {
        let n = follow.lines().len();
        async move {
            if n > 0 {
                Ok(())
            } else {
                Err("no line yet".to_owned())
            }
        }
    })
    .await;
    berth(&server, dir, &["message", "demo", "followed"]).ok("message");
    wait_for(
        "the follower to print the message's events",
        Duration::from_secs(20),
        || {
            let text = follow.lines().join("\n");
            async move {
                if text.contains("A2A_RESPONSE") {
                    Ok(())
                } else {
                    Err(text)
                }
            }
        },
    )
    .await;
    drop(follow);

    // Secrets, a workspace's and global.
    let set = berth(
        &server,
        dir,
        &["secrets", "set", "API_KEY", "s3cret", "-w", "demo"],
    )
    .ok("set");
    assert_eq!(set.stdout, "API_KEY saved\n");
    let listed = berth(&server, dir, &["secrets", "list", "-w", "demo"]).ok("list secrets");
    assert!(listed.stdout.contains("API_KEY"), "{}", listed.stdout);
    assert!(
        !listed.stdout.contains("s3cret"),
        "no values in the listing"
    );
    berth(
        &server,
        dir,
        &["secrets", "delete", "API_KEY", "--workspace", &id],
    )
    .ok("delete");
    let listed = berth(&server, dir, &["secrets", "list", "-w", &id]).ok("list secrets");
    // (The template's model stays: it is stored as the workspace's MODEL secret.)
    assert!(!listed.stdout.contains("API_KEY"), "{}", listed.stdout);
    let mut stdin_set = cli_command(&server, dir, &["secrets", "set", "GLOBAL_KEY", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("secrets set -");
    {
        use std::io::Write as _;
        let mut input = stdin_set.stdin.take().expect("stdin");
        input.write_all(b"from-stdin\n").expect("write");
    }
    Run::from(stdin_set.wait_with_output().expect("wait")).ok("set from stdin");
    let global = berth(&server, dir, &["secrets", "list", "-o", "json"]).ok("global list");
    assert_eq!(global.json()[0]["key"], "GLOBAL_KEY");
    assert_eq!(global.json()[0]["scope"], "global");
    berth(&server, dir, &["secrets", "rm", "GLOBAL_KEY"]).ok("global delete");

    // Tokens.
    let minted = berth(&server, dir, &["tokens", "create", "demo"]).ok("token");
    let token = minted.stdout.trim().to_owned();
    assert!(token.len() > 20, "{token}");
    let tokens = berth(&server, dir, &["tokens", "list", "demo", "-o", "json"]).ok("tokens");
    let entry = tokens.json()["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| token.starts_with(t["prefix"].as_str().unwrap_or("-")))
        .cloned()
        .expect("the new token listed");
    // The new token works as a credential (`--token`) for its own workspace.
    let own = berth(&server, dir, &["workspace", "get", &id, "--token", &token])
        .ok("the workspace token");
    assert!(
        own.stdout.starts_with(&format!("id:             {id}\n")),
        "{}",
        own.stdout
    );
    let token_id = entry["id"].as_str().expect("id");
    let revoked = berth(&server, dir, &["tokens", "revoke", "demo", token_id]).ok("revoke");
    assert_eq!(revoked.stdout, format!("{token_id} revoked\n"));

    // Errors: non-zero, the server's error on stderr, nothing on stdout.
    let missing = berth(
        &server,
        dir,
        &["workspace", "get", "00000000-0000-4000-8000-000000000000"],
    );
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert_eq!(missing.stdout, "");
    assert_eq!(
        missing.stderr,
        "berth: 404 Not Found: workspace not found\n"
    );
    let unknown_name = berth(&server, dir, &["message", "nobody", "hi"]);
    assert_eq!(unknown_name.code, 1);
    assert!(
        unknown_name
            .stderr
            .contains("no workspace has the id or name \"nobody\"")
    );
    let no_token = berth(
        &server,
        dir,
        &["workspace", "list", "--data-dir", "/nonexistent"],
    );
    assert_eq!(no_token.code, 1);
    assert!(
        no_token
            .stderr
            .starts_with("berth: 401 Unauthorized: admin auth required\n"),
        "{}",
        no_token.stderr
    );
    assert!(
        no_token.stderr.contains("--token"),
        "a hint: {}",
        no_token.stderr
    );

    // A start that fails: its failure code and message, exit 1.
    let failed = berth(
        &server,
        dir,
        &[
            "workspace",
            "create",
            "nowhere",
            "--runtime",
            "claude-code",
            "--model",
            "anthropic/claude-sonnet-4",
            "--wait",
        ],
    );
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert!(failed.stderr.contains("failed ("), "{}", failed.stderr);
    let list = berth(&server, dir, &["workspace", "list", "-o", "json"])
        .ok("list")
        .json();
    let code = list
        .as_array()
        .expect("list")
        .iter()
        .find(|w| w["name"] == "nowhere")
        .and_then(|w| w["failure_code"].as_str())
        .expect("a failure code")
        .to_owned();
    assert!(failed.stderr.contains(&code), "{code}: {}", failed.stderr);

    // Delete, then the list no longer shows it.
    berth(&server, dir, &["workspace", "delete", "demo", "--purge"]).ok("delete");
    let list = berth(&server, dir, &["workspace", "list", "-o", "json"])
        .ok("list")
        .json();
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .all(|w| w["id"] != id.as_str()),
        "{list}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let out = berth_release_command()
            .args(["completions", shell])
            .output()
            .expect("berth completions");
        let out = Run::from(out).ok(shell);
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200.min(out.stdout.len())]
        );
        assert!(out.stdout.contains("workspace"), "{shell}");
    }
}

/// A reader that stops early (`| head`) ends the command quietly: exit 0, no panic. The bash
/// script is larger than a pipe's buffer, so the write after `head` exits always fails.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" completions bash | head -n 1")
        .arg(release_binary())
        .output()
        .expect("bash");
    let out = Run::from(out).ok("completions | head");
    assert_eq!(out.stdout, "_berth() {\n");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// `berth files` and `berth exec` against a server whose operator turned on the process
/// backend's shell: bytes in through stdin and out through `cat` exactly, a listing, a delete,
/// and a command's output and exit code passed on as the CLI's own.
#[tokio::test]
async fn files_and_exec_with_the_cli() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let server = Server::start(&dir.join("berth-data"), &["--process-shell"]).await;
    berth(
        &server,
        dir,
        &["workspace", "create", "box", "--template", "echo", "--wait"],
    )
    .ok("create --wait");

    let blob: Vec<u8> = (0..=255u8).collect();
    let mut put = cli_command(
        &server,
        dir,
        &[
            "files",
            "put",
            "box",
            "data/blob.bin",
            "--root",
            "/workspace",
        ],
    );
    put.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = put.spawn().expect("spawn put");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&blob)
            .expect("write stdin");
    }
    let put = Run::from(child.wait_with_output().expect("put")).ok("files put");
    assert_eq!(put.stdout, "saved /workspace/data/blob.bin\n");
    let cat = cli_command(
        &server,
        dir,
        &[
            "files",
            "cat",
            "box",
            "data/blob.bin",
            "--root",
            "/workspace",
        ],
    )
    .output()
    .expect("cat");
    assert!(cat.status.success());
    assert_eq!(cat.stdout, blob, "the bytes come back exactly");
    let ls = berth(
        &server,
        dir,
        &["files", "ls", "box", "--root", "/workspace", "--depth", "2"],
    )
    .ok("files ls");
    assert!(ls.stdout.starts_with("PATH"), "{}", ls.stdout);
    assert!(ls.stdout.contains("data/"), "{}", ls.stdout);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("data/blob.bin") && l.contains("256")),
        "{}",
        ls.stdout
    );

    let run = berth(
        &server,
        dir,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "ls data; echo to-stderr >&2; exit 3",
        ],
    );
    assert_eq!(run.code, 3, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "blob.bin\n");
    assert_eq!(run.stderr, "to-stderr\n");
    let timed = berth(
        &server,
        dir,
        &["exec", "box", "--timeout", "1", "--", "sleep", "20"],
    );
    assert_eq!(timed.code, 124, "{}", timed.stderr);
    assert!(timed.stderr.contains("timed out"), "{}", timed.stderr);

    berth(
        &server,
        dir,
        &["files", "rm", "box", "data", "--root", "/workspace"],
    )
    .ok("files rm");
    let gone = berth(
        &server,
        dir,
        &[
            "files",
            "cat",
            "box",
            "data/blob.bin",
            "--root",
            "/workspace",
        ],
    );
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("file not found"), "{}", gone.stderr);
}

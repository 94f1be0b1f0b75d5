//! The command-line client: `berth workspace|events|secrets|tokens|message|templates|files|exec`, built on
//! `berth-client`, and `berth completions`.
//!
//! Every command talks to one server (`--server` / `BERTH_URL`) with one credential (`--token`
//! / `BERTH_TOKEN`; unset, and the server on this machine, the admin token file that `berth
//! serve` writes into its data directory). Results go to stdout, as a table or (`--output
//! json`) as the server's JSON; errors and progress go to stderr; the exit code is 0 on
//! success and 1 on any error.

pub mod args;
mod commands;
mod progress;
mod table;

use std::path::Path;
use std::process::ExitCode;

use berth_client::{Client, Error};
use berth_domain::WorkspaceId;
use secrecy::ExposeSecret as _;

use crate::cli::args::{ClientArgs, Output};
use crate::config::{Cli, Command, SecretsCommand};

/// What a client command failed with: the client's error, or a message of the CLI's own.
#[derive(Debug)]
pub(crate) enum Failure {
    Client(Error),
    Usage(String),
    /// Nothing to print: exit with this code (`berth exec` passes on its command's).
    Exit(u8),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

pub(crate) type Outcome = Result<(), Failure>;

/// A client command's context: the client and how to print.
pub(crate) struct Ctx {
    pub client: Client,
    pub output: Output,
    /// Where the credential came from, for the hint after a 401.
    credential: Credential,
}

/// Where the bearer token came from.
#[derive(Debug, Clone)]
enum Credential {
    Given,
    File(std::path::PathBuf),
    None {
        looked_in: Option<std::path::PathBuf>,
    },
}

/// Runs a client command (anything but `serve`, `migrate`, `agent` and `secrets rotate-key`),
/// returning its exit code; any other command is handed back.
pub async fn run(command: Command) -> Result<ExitCode, Command> {
    let outcome = match command {
        Command::Completions { shell } => {
            completions(shell);
            Ok(ExitCode::SUCCESS)
        }
        Command::Workspace { client, command } => {
            with_client(&client, |ctx| commands::workspace(ctx, command)).await
        }
        Command::Events { client, args } => {
            with_client(&client, |ctx| commands::events(ctx, args)).await
        }
        Command::Tokens { client, command } => {
            with_client(&client, |ctx| commands::tokens(ctx, command)).await
        }
        Command::Message {
            client,
            workspace,
            text,
        } => with_client(&client, |ctx| commands::message(ctx, workspace, text)).await,
        Command::Templates { client } => with_client(&client, commands::templates).await,
        Command::Files { client, command } => {
            with_client(&client, |ctx| commands::files(ctx, command)).await
        }
        Command::Exec { client, args } => {
            with_client(&client, |ctx| commands::exec(ctx, args)).await
        }
        Command::Secrets(SecretsCommand::List { client, scope }) => {
            with_client(&client, |ctx| commands::secrets_list(ctx, scope)).await
        }
        Command::Secrets(SecretsCommand::Set {
            client,
            scope,
            key,
            value,
        }) => with_client(&client, |ctx| commands::secrets_set(ctx, scope, key, value)).await,
        Command::Secrets(SecretsCommand::Delete { client, scope, key }) => {
            with_client(&client, |ctx| commands::secrets_delete(ctx, scope, key)).await
        }
        command @ (Command::Serve(_)
        | Command::Migrate(_)
        | Command::Agent
        | Command::Secrets(SecretsCommand::RotateKey { .. })) => return Err(command),
    };
    Ok(outcome.unwrap_or_else(|e| e))
}

/// Connects, runs `f`, and turns its failure into a message on stderr and exit code 1.
async fn with_client<F, Fut>(args: &ClientArgs, f: F) -> Result<ExitCode, ExitCode>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let ctx = match connect(args) {
        Ok(ctx) => ctx,
        Err(e) => return Err(fail(&Failure::Client(e), None)),
    };
    let credential = ctx.credential.clone();
    match f(ctx).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(fail(&e, Some(&credential))),
    }
}

/// Prints `failure` on stderr; exit code 1.
fn fail(failure: &Failure, credential: Option<&Credential>) -> ExitCode {
    match failure {
        Failure::Exit(code) => return ExitCode::from(*code),
        Failure::Usage(m) => eprintln!("berth: {m}"),
        Failure::Client(e) => {
            // The causes too: "error sending request" alone does not say "connection refused".
            let mut line = format!("berth: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
                source = cause.source();
            }
            eprintln!("{line}");
            match e {
                Error::Api { body, .. } => {
                    // Fields beyond the message (a code, a hint, the children of a delete): the
                    // whole body, so nothing the server said is lost.
                    let extra = body
                        .as_object()
                        .is_some_and(|o| o.keys().any(|k| k != "error"));
                    if extra {
                        eprintln!("{body}");
                    }
                    if body["status"] == "confirmation_required" {
                        eprintln!("(add --confirm to delete the sub-workspaces too)");
                    }
                    if e.status() == Some(berth_client::StatusCode::UNAUTHORIZED) {
                        eprintln!("{}", credential_hint(credential));
                    }
                }
                Error::Transport(_) => {
                    eprintln!(
                        "(is the server running? start one with `berth serve`, or pass --server / BERTH_URL)"
                    );
                }
                _ => {}
            }
        }
    }
    ExitCode::FAILURE
}

fn credential_hint(credential: Option<&Credential>) -> String {
    match credential {
        Some(Credential::Given) => {
            "the token given (--token / BERTH_TOKEN) was refused".to_owned()
        }
        Some(Credential::File(path)) => format!(
            "the admin token in {} was refused (is it the data directory of this server?)",
            path.display()
        ),
        Some(Credential::None {
            looked_in: Some(path),
        }) => format!(
            "no credential: pass --token or BERTH_TOKEN ({} does not exist; run from the directory `berth serve` runs in, or pass --data-dir)",
            path.display()
        ),
        _ => "no credential: pass --token or BERTH_TOKEN (the server's admin token is in <data-dir>/admin-token where it runs)".to_owned(),
    }
}

/// The client for `args`: the server URL and the credential (see the module docs).
fn connect(args: &ClientArgs) -> Result<Ctx, Error> {
    let mut client = Client::new(&args.server)?;
    let credential = match &args.token {
        Some(t) if !t.expose_secret().trim().is_empty() => {
            client = client.with_token(t.expose_secret().trim());
            Credential::Given
        }
        _ if is_local(&args.server) => {
            let path = crate::setup::admin_token_path(&args.data_dir);
            match read_token(&path) {
                Some(t) => {
                    client = client.with_token(t);
                    Credential::File(path)
                }
                None => Credential::None {
                    looked_in: Some(path),
                },
            }
        }
        _ => Credential::None { looked_in: None },
    };
    Ok(Ctx {
        client,
        output: args.output,
        credential,
    })
}

/// The token in `path`, when it can be read and is not empty.
fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Whether `url`'s host is this machine (a loopback address or `localhost`).
fn is_local(url: &str) -> bool {
    let Ok(url) = berth_client::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a workspace argument: an id as is, else the one live workspace with that name.
pub(crate) async fn resolve(ctx: &Ctx, arg: &str) -> Result<WorkspaceId, Failure> {
    if let Ok(id) = WorkspaceId::parse(arg.trim()) {
        return Ok(id);
    }
    let all = ctx.client.list_workspaces().await?;
    let matches: Vec<_> = all.iter().filter(|w| w.name == arg).collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(Failure::Usage(format!(
            "no workspace has the id or name {arg:?} (see `berth workspace list`)"
        ))),
        many => Err(Failure::Usage(format!(
            "{} workspaces are named {arg:?}: use an id ({})",
            many.len(),
            many.iter()
                .map(|w| w.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Writes `text` to stdout and flushes it (a follower's lines appear as they come). A reader
/// that went away (`berth events | head`) ends the command quietly with exit 0, as a Unix
/// filter does; Rust ignores SIGPIPE, so `print!` would panic there.
pub(crate) fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("berth: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `berth completions SHELL`.
fn completions(shell: args::Shell) {
    use clap::CommandFactory as _;
    let shell = match shell {
        args::Shell::Bash => clap_complete::Shell::Bash,
        args::Shell::Zsh => clap_complete::Shell::Zsh,
        args::Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "berth", &mut script);
    out(&String::from_utf8_lossy(&script));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_servers_are_loopback_or_localhost() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "https://127.0.0.2",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in ["http://10.0.0.1", "https://berth.example", "not a url"] {
            assert!(!is_local(url), "{url}");
        }
    }
}

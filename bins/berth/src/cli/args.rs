//! The command line of the client sub-commands (`berth workspace …`, `berth events`, …).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use secrecy::SecretString;

/// Which server to talk to, with which credential, and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The berth server.
    #[arg(
        long,
        env = "BERTH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,

    /// The bearer token (the admin token, or a workspace token for that workspace's routes).
    /// Unset, with a server on this machine: the admin token file of the data directory.
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<SecretString>,

    /// The data directory whose `admin-token` is used when no token is given and the server is
    /// on this machine (the same default as `berth serve`).
    #[arg(
        long,
        env = "BERTH_DATA_DIR",
        default_value = "berth-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Output: a table for people, or the server's JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Output,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The JSON the server answered, one document (one line per event when following).
    Json,
}

/// `berth workspace …`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create(CreateArgs),
    /// List the workspaces.
    #[command(alias = "ls")]
    List {
        /// Workspaces fetched per request.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Show one workspace.
    Get {
        /// Workspace id or name.
        workspace: String,
    },
    /// Change a workspace's name, role, tier, runtime or parent.
    Update(UpdateArgs),
    /// Delete a workspace (marked removed; `--purge` deletes its rows and backend resources).
    #[command(alias = "rm")]
    Delete {
        /// Workspace id or name.
        workspace: String,
        /// Also delete its sub-workspaces.
        #[arg(long)]
        confirm: bool,
        /// Delete every row and backend resource instead of marking it removed.
        #[arg(long)]
        purge: bool,
    },
    /// Restart a workspace's agent.
    Restart {
        /// Workspace id or name.
        workspace: String,
        /// Restart it from this template.
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Pause a workspace (and its sub-workspaces): its agent is stopped.
    Pause {
        /// Workspace id or name.
        workspace: String,
    },
    /// Resume a paused workspace.
    Resume {
        /// Workspace id or name.
        workspace: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Hibernate an idle workspace: its agent is stopped until `wake`.
    Hibernate {
        /// Workspace id or name.
        workspace: String,
        /// Even with active tasks.
        #[arg(long)]
        force: bool,
    },
    /// Provision a hibernated workspace again.
    Wake {
        /// Workspace id or name.
        workspace: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `--wait` and its deadline.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Follow the workspace's events until it is `online` (exit 0) or `failed` (exit 1, with its
    /// failure code and message).
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 600, requires = "wait")]
    pub timeout: u64,
}

/// `berth workspace create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The workspace's name (a taken name gets a suffix).
    pub name: String,
    /// Template (a directory of the server's templates directory; see `berth templates`).
    #[arg(long, short = 't')]
    pub template: Option<String>,
    /// Runtime (default: the template's).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Model (default: the template's).
    #[arg(long)]
    pub model: Option<String>,
    /// Role, free text.
    #[arg(long)]
    pub role: Option<String>,
    /// Tier 1–4.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=4))]
    pub tier: Option<i64>,
    /// Parent workspace id.
    #[arg(long)]
    pub parent: Option<String>,
    /// An external agent (runs elsewhere and connects back; the answer holds its once-only token).
    #[arg(long)]
    pub external: bool,
    /// A secret handed to the agent as an environment variable (repeatable).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<String>,
    /// `Idempotency-Key`: retrying with the same key returns the first create's answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `berth workspace update`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Workspace id or name.
    pub workspace: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New role.
    #[arg(long)]
    pub role: Option<String>,
    /// New tier (admin).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=4))]
    pub tier: Option<i64>,
    /// New runtime (admin; applies at the next restart).
    #[arg(long)]
    pub runtime: Option<String>,
    /// New parent workspace id (admin); `none` makes it a root.
    #[arg(long)]
    pub parent: Option<String>,
}

/// `berth events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this workspace's events (id or name).
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Keep printing new events as they happen (ctrl-c to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the latest events to print first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// `berth secrets list|set|delete` (the client side of `berth secrets`).
#[derive(Debug, Clone, Args)]
pub struct SecretScopeArgs {
    /// A workspace's secrets (id or name); without it, the global secrets.
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
}

/// `berth tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List a workspace's live tokens (never their values).
    #[command(alias = "ls")]
    List {
        /// Workspace id or name.
        workspace: String,
    },
    /// Mint a token for a workspace; its value is printed once.
    Create {
        /// Workspace id or name.
        workspace: String,
    },
    /// Revoke a token.
    Revoke {
        /// Workspace id or name.
        workspace: String,
        /// The token's id (see `berth tokens list`).
        token_id: uuid::Uuid,
    },
}

/// `berth files …`: a workspace's files (`--root`: `/configs`, the default, `/workspace`, and on
/// Docker `/home`, `/plugins`).
#[derive(Debug, Clone, Subcommand)]
pub enum FilesCommand {
    /// List a directory (default: the root).
    #[command(alias = "list")]
    Ls {
        /// Workspace id or name.
        workspace: String,
        /// The directory, relative to the root.
        path: Option<String>,
        /// The root.
        #[arg(long)]
        root: Option<String>,
        /// Levels to descend, 1–5.
        #[arg(long, default_value_t = 1)]
        depth: u8,
    },
    /// Print a file's bytes on stdout.
    Cat {
        /// Workspace id or name.
        workspace: String,
        /// The file, relative to the root.
        path: String,
        /// The root.
        #[arg(long)]
        root: Option<String>,
    },
    /// Write a file from a local file, or from stdin (`-` or no file). Under `/configs` the
    /// change is kept across restarts and restarts a running workspace.
    Put {
        /// Workspace id or name.
        workspace: String,
        /// The file, relative to the root.
        path: String,
        /// The local file to send (default: stdin).
        file: Option<PathBuf>,
        /// The root.
        #[arg(long)]
        root: Option<String>,
    },
    /// Delete a file, a link, or a directory with everything in it.
    Rm {
        /// Workspace id or name.
        workspace: String,
        /// The path, relative to the root.
        path: String,
        /// The root.
        #[arg(long)]
        root: Option<String>,
    },
}

/// `berth exec`: one command in a workspace, its output on stdout and stderr and its exit code
/// as berth's (124 when the timeout killed it).
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Workspace id or name.
    pub workspace: String,
    /// Working directory as the workspace sees it (default: its workspace directory).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Seconds before the command is killed (default: the server's maximum).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// An environment variable, `KEY=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The program and its arguments (after `--`); not run through a shell.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Shells `berth completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

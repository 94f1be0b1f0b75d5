//! Command line and environment configuration, parsed once here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::cli::args::{
    ClientArgs, EventsArgs, ExecArgs, FilesCommand, SecretScopeArgs, Shell, TokensCommand,
    WorkspaceCommand,
};

/// berth: a workspace server for AI agents (`berth serve`), and its command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth, a workspace server for AI agents (`berth serve`), and its command-line client"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(StoreArgs),
    /// Run the reference agent (`berth-agent`) from its environment: the runtime of the bundled
    /// `echo` template under the process provisioner.
    Agent,
    /// Secrets: a workspace's or the global ones (`list`, `set`, `delete`), and key rotation.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Workspaces on a berth server: create, list, get, update, delete, lifecycle.
    #[command(alias = "ws")]
    Workspace {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Print events: the latest ones, then, with `--follow`, new ones as they happen.
    Events {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// Which events.
        #[command(flatten)]
        args: EventsArgs,
    },
    /// A workspace's tokens: list, create, revoke.
    Tokens {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Send a workspace's agent a message (A2A `message/send`) and print its reply.
    Message {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// Workspace id or name.
        workspace: String,
        /// The message.
        text: String,
    },
    /// A workspace's files: list, print, write, delete.
    Files {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        command: FilesCommand,
    },
    /// Run one command in a workspace (`berth exec <workspace> -- ls -la`); exits with its code.
    Exec {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// The command.
        #[command(flatten)]
        args: ExecArgs,
    },
    /// List the server's templates.
    Templates {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script (e.g. `berth completions bash > /etc/bash_completion.d/berth`).
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// `berth secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// List secret keys (never values): a workspace's with `--workspace`, else the global ones.
    #[command(alias = "ls")]
    List {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// Whose secrets.
        #[command(flatten)]
        scope: SecretScopeArgs,
    },
    /// Set a secret (created or replaced); `-` as the value reads it from standard input.
    Set {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// Whose secret.
        #[command(flatten)]
        scope: SecretScopeArgs,
        /// The key (an environment variable name).
        key: String,
        /// The value, or `-` for standard input (keeps it out of the shell history).
        value: String,
    },
    /// Delete a secret.
    #[command(alias = "rm")]
    Delete {
        /// The server and the output.
        #[command(flatten)]
        client: ClientArgs,
        /// Whose secret.
        #[command(flatten)]
        scope: SecretScopeArgs,
        /// The key.
        key: String,
    },
    /// Re-encrypt every sealed value under the active (first) key of the key ring, in batches,
    /// online. Put the new key first in the key file (keep the old ones after it), restart the
    /// servers, then run this; re-run it if interrupted.
    RotateKey {
        /// Storage settings.
        #[command(flatten)]
        store: StoreArgs,
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: u32,
    },
}

/// Which provisioning backend runs container workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvisionerChoice {
    /// Docker when the daemon answers and at least one runtime image is configured
    /// (`--docker-image`), else local processes.
    Auto,
    /// The local Docker daemon.
    Docker,
    /// Local child processes (the embedded default).
    Process,
    /// None: container workspaces fail with `NO_BACKEND`; external workspaces work.
    None,
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the SQLite database, the generated admin token and the generated secret key.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "berth-data")]
    pub data_dir: PathBuf,

    /// `postgres://…` selects PostgreSQL; `sqlite:…` a SQLite file; unset: `<data-dir>/berth.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Secret key ring (`<key-id>:<base64 32 bytes>` lines, first = active). Unset: the key file
    /// `<data-dir>/secret-keys`, generated on first start.
    #[arg(long, env = "BERTH_SECRET_KEYS", hide_env_values = true)]
    pub secret_keys: Option<SecretString>,
}

/// `berth serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Storage settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address to listen on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Development mode: admin routes need no credential. Loopback addresses only.
    #[arg(long, env = "BERTH_DEV")]
    pub dev: bool,

    /// The admin bearer token. Unset: read from, or generated into, `<data-dir>/admin-token`.
    #[arg(long, env = "BERTH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Directory of workspace templates (one sub-directory with a `config.yaml` each).
    #[arg(
        long,
        env = "BERTH_TEMPLATES_DIR",
        default_value = "fixtures/templates"
    )]
    pub templates_dir: PathBuf,

    /// Public URL of this server, handed to external agents. Unset: derived from each request.
    #[arg(long, env = "BERTH_PLATFORM_URL")]
    pub platform_url: Option<String>,

    /// Proxies whose `X-Forwarded-*` headers are trusted: addresses or CIDR networks,
    /// comma-separated. The rate limiter then keys a request by the right-most
    /// `X-Forwarded-For` hop that is not one of them.
    #[arg(
        long,
        env = "BERTH_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = berth_http::parse_trusted_proxy
    )]
    pub trusted_proxies: Vec<berth_http::IpNet>,

    /// Browser origins allowed cross-origin access (CORS, and the `/ws` origin check),
    /// comma-separated; `''` allows none. Other origins are answered 403.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000,http://localhost:3001"
    )]
    pub cors_origins: Vec<String>,

    /// Requests per minute per client address, or per bearer credential; 0 disables the limiter.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,

    /// Base URL of the v2 memory plugin that receives `initial_memories`.
    #[arg(long, env = "BERTH_MEMORY_PLUGIN_URL")]
    pub memory_plugin_url: Option<String>,

    /// Allow agent URLs in private (RFC 1918 / ULA) ranges.
    #[arg(long, env = "BERTH_ALLOW_PRIVATE_AGENT_URLS")]
    pub allow_private_agent_urls: bool,

    /// Request body limit in bytes.
    #[arg(long, env = "BERTH_BODY_LIMIT", default_value_t = berth_http::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// Seconds without a heartbeat before a container workspace goes `offline`.
    #[arg(long, env = "BERTH_LIVENESS_WINDOW_SECS", default_value_t = 180)]
    pub liveness_window_secs: u64,

    /// Seconds without a heartbeat before an external workspace goes `awaiting_agent`.
    #[arg(long, env = "BERTH_REMOTE_STALE_AFTER_SECS", default_value_t = 90)]
    pub remote_stale_after_secs: u64,

    /// Default provisioning deadline in seconds (a template's `provision_timeout_seconds` wins).
    #[arg(long, env = "BERTH_PROVISION_TIMEOUT_SECS", default_value_t = 600)]
    pub provision_timeout_secs: u64,

    /// Largest file the files API reads or writes, in bytes (413 past it; also the body limit
    /// of its write routes).
    #[arg(long, env = "BERTH_MAX_FILE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_file_bytes: u64,

    /// Longest `POST /workspaces/{id}/exec` may run, in seconds (its default when it asks for none).
    #[arg(long, env = "BERTH_EXEC_MAX_TIMEOUT_SECS", default_value_t = 300)]
    pub exec_max_timeout_secs: u64,

    /// Bytes of stdout and of stderr an exec answers with, each (the rest is cut and flagged).
    #[arg(long, env = "BERTH_EXEC_OUTPUT_LIMIT", default_value_t = 1024 * 1024)]
    pub exec_output_limit: usize,

    /// A terminal session with no input and no output for this many seconds is closed.
    #[arg(long, env = "BERTH_TERMINAL_IDLE_TIMEOUT_SECS", default_value_t = 1800)]
    pub terminal_idle_timeout_secs: u64,

    /// A terminal session is closed after this many seconds, idle or not.
    #[arg(long, env = "BERTH_TERMINAL_MAX_SESSION_SECS", default_value_t = 8 * 3600)]
    pub terminal_max_session_secs: u64,

    /// Terminal sessions open at once per workspace.
    #[arg(long, env = "BERTH_TERMINAL_MAX_PER_WORKSPACE", default_value_t = 4)]
    pub terminal_max_per_workspace: usize,

    /// Allow exec and the terminal on the process backend. There they are a command or a shell
    /// ON THIS HOST, as the server's user, for anyone with the admin token or a workspace's
    /// token: off by default.
    #[arg(long, env = "BERTH_PROCESS_SHELL", default_value_t = false)]
    pub process_shell: bool,

    /// Seconds after the last write under a running workspace's `/configs` before it restarts
    /// to read them (each write re-arms the timer).
    #[arg(long, env = "BERTH_CONFIG_RESTART_DELAY_SECS", default_value_t = 5)]
    pub config_restart_delay_secs: u64,

    /// Most heartbeats applied in one database transaction (group commit: heartbeats that
    /// arrive while one is being written go together into the next).
    #[arg(long, env = "BERTH_HEARTBEAT_BATCH_MAX", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub heartbeat_batch_max: u64,

    /// Milliseconds a heartbeat batch that already has company waits for more (0: none; a lone
    /// heartbeat never waits).
    #[arg(long, env = "BERTH_HEARTBEAT_BATCH_WINDOW_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub heartbeat_batch_window_ms: u64,

    /// Seconds a verified workspace token is trusted without asking the database (0: ask on
    /// every request). A token revoked through this server is refused at once; one revoked
    /// through another server sharing the database, within this time.
    #[arg(long, env = "BERTH_TOKEN_CACHE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub token_cache_secs: u64,

    /// A warm pool: `TEMPLATE=SIZE` keeps SIZE agents of that template started ahead, so a
    /// create of the template (naming no tier, or tier 3, and no compute, host directory or
    /// bundle) is handed a running agent instead of starting one; `TEMPLATE:TIER=SIZE`
    /// for creates that ask for that tier. Repeat the flag for more pools; the environment
    /// variable takes a comma-separated list. Process and Docker backends only.
    #[arg(
        long = "warm-pool",
        env = "BERTH_WARM_POOLS",
        value_delimiter = ',',
        value_name = "TEMPLATE[:TIER]=SIZE"
    )]
    pub warm_pools: Vec<berth_core::PoolSpec>,

    /// Warm-pool members started at once (over all pools).
    #[arg(long, env = "BERTH_WARM_POOL_REFILL_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub warm_pool_refill_concurrency: u64,

    /// Serve `GET /metrics` without the admin bearer (for a scraper on a trusted network).
    #[arg(long, env = "BERTH_METRICS_OPEN", default_value_t = false)]
    pub metrics_open: bool,

    /// Days the activity log keeps rows.
    #[arg(long, env = "BERTH_ACTIVITY_RETENTION_DAYS", default_value_t = 7)]
    pub activity_retention_days: u64,

    /// Hours between activity-log retention passes.
    #[arg(
        long,
        env = "BERTH_ACTIVITY_CLEANUP_INTERVAL_HOURS",
        default_value_t = 6
    )]
    pub activity_cleanup_interval_hours: u64,

    /// Ceiling, in seconds, of one A2A delivery to an agent (`X-Timeout` can only lower it).
    #[arg(long, env = "BERTH_A2A_TIMEOUT_SECS", default_value_t = 1800)]
    pub a2a_timeout_secs: u64,

    /// Messages one busy agent may have waiting in the A2A queue; more are answered 429.
    #[arg(long, env = "BERTH_A2A_QUEUE_MAX", default_value_t = 100)]
    pub a2a_queue_max: u64,

    /// Days the event log keeps events.
    #[arg(long, env = "BERTH_EVENT_RETENTION_DAYS", default_value_t = 30)]
    pub event_retention_days: u64,

    /// Seconds between liveness/health sweeps.
    #[arg(long, env = "BERTH_SWEEP_INTERVAL_SECS", default_value_t = 15)]
    pub sweep_interval_secs: u64,

    /// Provisioning backend.
    #[arg(long, env = "BERTH_PROVISIONER", default_value = "auto")]
    pub provisioner: ProvisionerChoice,

    /// Docker image of a runtime: `runtime=image` (repeatable; `;`-separated in the env var),
    /// e.g. `echo=berth-agent:test` (built by `cargo xtask image`).
    #[arg(
        long = "docker-image",
        env = "BERTH_DOCKER_IMAGES",
        value_delimiter = ';'
    )]
    pub docker_images: Vec<String>,

    /// A user-defined Docker network to attach workspace containers to.
    #[arg(long, env = "BERTH_DOCKER_NETWORK")]
    pub docker_network: Option<String>,

    /// The Docker daemon socket.
    #[arg(
        long,
        env = "BERTH_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: String,

    /// Extra runtime commands for the process provisioner: `runtime=program arg…` (repeatable;
    /// the bundled `echo` runtime runs `berth agent`).
    #[arg(
        long = "runtime-command",
        env = "BERTH_RUNTIME_COMMANDS",
        value_delimiter = ';'
    )]
    pub runtime_commands: Vec<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "BERTH_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

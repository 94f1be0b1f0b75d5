//! The berth server binary: configuration → tracing → store → provisioner → serve; and the
//! command-line client of a running server (`cli`).

mod cli;
mod config;
mod leader;
mod setup;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_core::{CoreConfig, HttpMemoryPlugin, SystemResolver, TemplateCatalog, WorkspaceService};
use berth_domain::ssrf::SsrfPolicy;
use berth_http::{AdminAuth, AppState, HttpConfig};
use berth_provision::{
    DockerConfig, DockerProvisioner, NoBackend, ProcessConfig, ProcessProvisioner, Provisioner,
};
use clap::Parser as _;
use secrecy::ExposeSecret as _;

use crate::config::{Cli, Command, LogFormat, ProvisionerChoice, SecretsCommand, ServeArgs};

#[tokio::main]
async fn main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli::run(cli.command).await {
        Ok(code) => Ok(code),
        Err(command) => run_server(command)
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
    }
}

/// The server-side commands: `serve`, `migrate`, `agent`, `secrets rotate-key`.
async fn run_server(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            serve(*args).await
        }
        Command::Secrets(SecretsCommand::RotateKey { store, batch_size }) => {
            init_tracing(LogFormat::Text);
            let (store, _) = setup::open_store(&store).await?;
            let templates = TemplateCatalog::empty(std::path::PathBuf::from("."));
            let service = WorkspaceService::new(
                store,
                Arc::new(NoBackend),
                Arc::new(SystemResolver::default()),
                templates,
                CoreConfig::default(),
            );
            let report = service
                .reencrypt_secrets(batch_size)
                .await
                .context("re-encrypting secrets")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.remaining_by_key_id.is_empty() {
                bail!(
                    "some rows are sealed with keys this server does not have: {:?}",
                    report.remaining_by_key_id
                );
            }
            Ok(())
        }
        Command::Agent => {
            berth_agent::init_tracing();
            berth_agent::run_from_env().await
        }
        Command::Migrate(args) => {
            init_tracing(LogFormat::Text);
            let (_, backend) = setup::open_store(&args).await?;
            tracing::info!(store = %backend, "migrations applied");
            Ok(())
        }
        _ => unreachable!("client commands are run by cli::run"),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colours only on a terminal: logs redirected to a file or a collector stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    if args.dev {
        if !args.listen.ip().is_loopback() {
            bail!(
                "--dev only listens on loopback addresses (got {})",
                args.listen
            );
        }
        tracing::warn!(
            "DEVELOPMENT MODE: admin routes need no credential; do not expose this server"
        );
    }
    let (store, backend) = setup::open_store(&args.store).await?;
    setup::check_key_ring(store.as_ref(), &args.store).await?;
    // Created by the first start on the database; labels the Docker resources and scopes the
    // orphan sweep to them.
    let installation = store
        .installation_id()
        .await
        .context("reading the installation id")?;
    tracing::info!(store = %backend, %installation, "store ready");

    let token_path = setup::admin_token_path(&args.store.data_dir);
    let admin_token = match &args.admin_token {
        Some(t) => t.clone(),
        None => {
            let (token, created) =
                setup::read_or_create_secret(&token_path, setup::generate_token)?;
            // Written to stderr, never through the log pipeline; the value itself only when a
            // person is watching (stderr is a terminal), not into a file or a log collector.
            eprint!(
                "{}",
                setup::admin_token_notice(
                    &token,
                    created,
                    &token_path,
                    std::io::stderr().is_terminal()
                )
            );
            token
        }
    };

    let templates = TemplateCatalog::load(&args.templates_dir);
    tracing::info!(dir = %templates.root().display(), runtimes = ?templates.runtimes(), "templates loaded");
    let core = CoreConfig {
        dev: args.dev,
        liveness_window: Duration::from_secs(args.liveness_window_secs),
        remote_stale_after: Duration::from_secs(args.remote_stale_after_secs),
        sweep_interval: Duration::from_secs(args.sweep_interval_secs.max(1)),
        provision_timeout: Duration::from_secs(args.provision_timeout_secs),
        ssrf: SsrfPolicy {
            allow_private: args.allow_private_agent_urls,
            allow_loopback: args.dev,
        },
        forced_tier: None,
        agent_platform_url: args
            .platform_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", loopback_for(args.listen))),
        inside: berth_core::InsideConfig {
            max_file_bytes: args.max_file_bytes,
            exec_max_timeout: Duration::from_secs(args.exec_max_timeout_secs.max(1)),
            exec_output_limit: args.exec_output_limit,
            terminal_idle: Duration::from_secs(args.terminal_idle_timeout_secs.max(1)),
            terminal_max_session: Duration::from_secs(args.terminal_max_session_secs.max(1)),
            terminal_max_per_workspace: args.terminal_max_per_workspace,
            process_shell: args.process_shell,
            config_restart_delay: Duration::from_secs(args.config_restart_delay_secs),
        },
        heartbeat_batching: berth_core::HeartbeatBatching {
            max_batch: args.heartbeat_batch_max as usize,
            window: Duration::from_millis(args.heartbeat_batch_window_ms),
        },
        token_cache_ttl: Duration::from_secs(args.token_cache_secs),
    };
    let Backend {
        provisioner,
        process,
        bridge,
    } = choose_provisioner(&args, &installation.to_string()).await?;
    tracing::info!(provisioner = ?provisioner.kind(), "provisioner ready");
    if let Some(p) = &process {
        // Before anything is served or swept: an agent a killed previous run left behind must
        // neither talk to this run nor run beside the one the sweeps start for its workspace.
        let stopped = p.stop_leftovers().await;
        if stopped > 0 {
            tracing::warn!(
                agents = stopped,
                "stopped the agents a previous run of the server left running"
            );
        }
    }
    let mut service = WorkspaceService::new(
        store,
        provisioner,
        Arc::new(SystemResolver::default()),
        templates,
        core,
    );
    service = service.with_a2a_settings(berth_core::A2aSettings {
        request_timeout: Duration::from_secs(args.a2a_timeout_secs.max(1)),
        queue_max_per_target: i64::try_from(args.a2a_queue_max.max(1)).unwrap_or(i64::MAX),
        ..Default::default()
    });
    service = service.with_event_config(berth_core::EventConfig {
        retention: Duration::from_secs(args.event_retention_days.saturating_mul(24 * 3600)),
        ..Default::default()
    });
    service = service
        .with_pools(berth_core::PoolSettings {
            pools: args.warm_pools.clone(),
            refill_concurrency: usize::try_from(args.warm_pool_refill_concurrency).unwrap_or(2),
            ..Default::default()
        })
        .await?;
    if let Some(url) = &args.memory_plugin_url {
        let plugin = HttpMemoryPlugin::new(url)
            .map_err(anyhow::Error::msg)
            .context("memory plugin client")?;
        service = service.with_memory_plugin(Arc::new(plugin));
    }

    let state = AppState {
        service: service.clone(),
        admin: Arc::new(AdminAuth::new(&admin_token, args.dev)),
        config: Arc::new(HttpConfig {
            dev: args.dev,
            platform_url: args.platform_url.clone(),
            trusted_proxies: berth_http::TrustedProxies::new(args.trusted_proxies.clone()),
            cors_origins: berth_http::CorsOrigins::new(&args.cors_origins),
            rate_limit: (args.rate_limit > 0).then_some(berth_http::RateLimit {
                per_minute: args.rate_limit,
            }),
            body_limit: args.body_limit,
            metrics_open: args.metrics_open,
            git_sha: option_env!("BERTH_GIT_SHA").unwrap_or("unknown").to_owned(),
        }),
    };
    service
        .spawn_event_tailer()
        .await
        .context("starting the event tailer")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "berth listening");
    eprintln!("berth: listening on http://{addr}");
    let (stop_sweeps, sweeps_stopped) = tokio::sync::watch::channel(false);
    let leadership = match args
        .store
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned())
    {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            leader::Leadership::Postgres(url)
        }
        _ => leader::Leadership::Sole,
    };
    let sweeper = tokio::spawn(leader::run_sweeps(
        service.clone(),
        leadership,
        sweeps_stopped.clone(),
    ));
    let retention = berth_core::ActivityRetention {
        keep: Duration::from_secs(args.activity_retention_days.saturating_mul(24 * 3600)),
        every: Duration::from_secs(
            args.activity_cleanup_interval_hours
                .max(1)
                .saturating_mul(3600),
        ),
    };
    let activity_retention = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .run_activity_retention(retention, sweeps_stopped)
                .await
        })
    };
    // One shutdown signal for every listener.
    let (shutting_down, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutting_down.send(true);
    });
    let until_shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let router = berth_http::router(state);
    let bridge_server = match bridge {
        Some(listener) => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "berth listening for containers on the Docker bridge");
            Some(tokio::spawn(berth_http::serve(
                listener,
                router.clone(),
                until_shutdown(shutdown.clone()),
            )))
        }
        None => None,
    };
    berth_http::serve(listener, router, until_shutdown(shutdown)).await?;
    if let Some(server) = bridge_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the bridge listener failed"),
            Err(e) => tracing::error!(error = %e, "the bridge listener task failed"),
        }
    }
    let _ = stop_sweeps.send(true);
    if let Err(e) = sweeper.await {
        tracing::error!(error = %e, "sweeper task failed");
    }
    if let Err(e) = activity_retention.await {
        tracing::error!(error = %e, "activity retention task failed");
    }
    tracing::info!("draining background work");
    if tokio::time::timeout(Duration::from_secs(30), service.drain())
        .await
        .is_err()
    {
        tracing::warn!("background work did not finish within 30 s");
    }
    if let Some(p) = process {
        tracing::info!("stopping agent processes");
        p.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The provisioning backend `serve` runs with.
struct Backend {
    provisioner: Arc<dyn Provisioner>,
    /// The process provisioner again, so shutdown can stop its children.
    process: Option<Arc<ProcessProvisioner>>,
    /// A listener on the Docker bridge's gateway for containers off the host network, when the
    /// server itself listens on loopback only (see [`bridge_access`]).
    bridge: Option<std::net::TcpListener>,
}

impl Backend {
    fn process(p: ProcessProvisioner) -> Self {
        let p = Arc::new(p);
        Self {
            provisioner: p.clone(),
            process: Some(p),
            bridge: None,
        }
    }

    fn docker(
        mut d: DockerProvisioner,
        bridge: Option<(String, Option<std::net::TcpListener>)>,
    ) -> Self {
        let listener = bridge.and_then(|(url, listener)| {
            d.set_bridge_platform_url(url);
            listener
        });
        Self {
            provisioner: Arc::new(d),
            process: None,
            bridge: listener,
        }
    }
}

/// How containers on a bridge network reach this server when the platform URL agents get is a
/// loopback one (the default: `--listen 127.0.0.1:8080`, no `--platform-url`): through the
/// default bridge's gateway address (`docker0`, an address of this host that every container
/// can reach). Listening on all addresses already covers it; listening on loopback only, berth
/// adds a second listener on `<gateway>:<port>` — reachable from this host's containers, not
/// from other machines. Returns the platform URL for bridge containers and that listener.
/// `None` (an explicit `--platform-url`, a listen address that is neither, no gateway, a bind
/// failure) leaves such starts to fail at once with `PLATFORM_UNREACHABLE`.
async fn bridge_access(
    args: &ServeArgs,
    docker: &DockerProvisioner,
) -> Option<(String, Option<std::net::TcpListener>)> {
    if args.platform_url.is_some() {
        return None;
    }
    let ip = args.listen.ip();
    let port = args.listen.port();
    if !(ip.is_loopback() || ip.is_unspecified()) || port == 0 {
        return None;
    }
    let gateway = match docker.bridge_gateway().await {
        Ok(Some(gateway)) => gateway,
        Ok(None) => {
            tracing::warn!(
                "the Docker bridge has no gateway address: containers off the host network cannot reach berth"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Docker bridge: containers off the host network cannot reach berth");
            return None;
        }
    };
    let addr = std::net::SocketAddr::new(gateway, port);
    let url = format!("http://{addr}");
    if ip.is_unspecified() {
        return Some((url, None));
    }
    match std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(listener) => Some((url, Some(listener))),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen on the Docker bridge: containers off the host network will fail with PLATFORM_UNREACHABLE (use --listen 0.0.0.0:{port} or --platform-url)");
            None
        }
    }
}

/// Picks the provisioning backend (see `--provisioner`).
async fn choose_provisioner(args: &ServeArgs, installation: &str) -> Result<Backend> {
    let docker = || async {
        let mut config = DockerConfig::new();
        config.socket = args.docker_socket.clone();
        config.network = args.docker_network.clone();
        installation.clone_into(&mut config.installation);
        for spec in &args.docker_images {
            let (runtime, image) = spec
                .split_once('=')
                .filter(|(r, i)| !r.trim().is_empty() && !i.trim().is_empty())
                .with_context(|| format!("--docker-image {spec:?} is not runtime=image"))?;
            config = config.with_image(runtime.trim(), image.trim());
        }
        let docker = DockerProvisioner::connect(config)
            .await
            .map_err(anyhow::Error::from)?;
        let bridge = bridge_access(args, &docker).await;
        Ok::<_, anyhow::Error>(Backend::docker(docker, bridge))
    };
    match args.provisioner {
        ProvisionerChoice::None => {
            tracing::warn!(
                "no provisioning backend: container workspaces will be marked failed (NO_BACKEND)"
            );
            Ok(Backend {
                provisioner: Arc::new(NoBackend),
                process: None,
                bridge: None,
            })
        }
        ProvisionerChoice::Docker => docker().await.context("connecting to Docker"),
        ProvisionerChoice::Process => Ok(Backend::process(process_provisioner(args)?)),
        ProvisionerChoice::Auto => {
            if !args.docker_images.is_empty() {
                match docker().await {
                    Ok(d) => return Ok(d),
                    Err(e) => {
                        tracing::info!(error = %e, "Docker not available; using local processes")
                    }
                }
            }
            Ok(Backend::process(process_provisioner(args)?))
        }
    }
}

/// The process provisioner: agents under `<data-dir>/workspaces`, the `echo` runtime as
/// `berth agent` (this very binary), plus configured runtime commands.
fn process_provisioner(args: &ServeArgs) -> Result<ProcessProvisioner> {
    let exe = std::env::current_exe().context("locating the berth binary")?;
    let mut config = ProcessConfig::new(args.store.data_dir.join("workspaces")).with_command(
        "echo",
        [exe.to_string_lossy().into_owned(), "agent".to_owned()],
    );
    for spec in &args.runtime_commands {
        let (runtime, command) = spec
            .split_once('=')
            .with_context(|| format!("--runtime-command {spec:?} is not runtime=program args…"))?;
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if runtime.trim().is_empty() || argv.is_empty() {
            bail!("--runtime-command {spec:?} is not runtime=program args…");
        }
        config = config.with_command(runtime.trim(), argv);
    }
    Ok(ProcessProvisioner::new(config))
}

/// The address local agents dial: the listen address, with an unspecified IP replaced by loopback.
fn loopback_for(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

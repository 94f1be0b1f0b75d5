//! The berth server binary: configuration → tracing → store → provisioner → serve.

mod config;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_core::{CoreConfig, HttpMemoryPlugin, SystemResolver, TemplateCatalog, WorkspaceService};
use berth_domain::ssrf::SsrfPolicy;
use berth_http::{AdminAuth, AppState, HttpConfig};
use berth_provision::NoBackend;
use clap::Parser as _;
use secrecy::ExposeSecret as _;

use crate::config::{Cli, Command, LogFormat, ServeArgs};

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            serve(args).await
        }
        Command::Migrate(args) => {
            init_tracing(LogFormat::Text);
            let (_, backend) = setup::open_store(&args).await?;
            tracing::info!(store = %backend, "migrations applied");
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    tracing::info!(store = %backend, "store ready");

    let token_path = args.store.data_dir.join("admin-token");
    let admin_token = match &args.admin_token {
        Some(t) => t.clone(),
        None => {
            let (token, created) =
                setup::read_or_create_secret(&token_path, setup::generate_token)?;
            if created {
                // Shown once, on the terminal only (never through the log pipeline).
                eprintln!("berth: generated admin token {}", token.expose_secret());
            }
            eprintln!(
                "berth: admin token in {} (use: Authorization: Bearer $(cat {}))",
                token_path.display(),
                token_path.display()
            );
            token
        }
    };

    let templates = TemplateCatalog::load(&args.templates_dir);
    tracing::info!(dir = %templates.root().display(), runtimes = ?templates.runtimes(), "templates loaded");
    let core = CoreConfig {
        ssrf: SsrfPolicy {
            allow_private: args.allow_private_agent_urls,
            allow_loopback: args.dev,
        },
        forced_tier: None,
        agent_platform_url: args
            .platform_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", loopback_for(args.listen))),
    };
    let mut service = WorkspaceService::new(
        store,
        Arc::new(NoBackend),
        Arc::new(SystemResolver::default()),
        templates,
        core,
    );
    if let Some(url) = &args.memory_plugin_url {
        let plugin = HttpMemoryPlugin::new(url)
            .map_err(anyhow::Error::msg)
            .context("memory plugin client")?;
        service = service.with_memory_plugin(Arc::new(plugin));
    }
    tracing::warn!(
        "no provisioning backend configured: container workspaces will be marked failed (NO_BACKEND)"
    );

    let state = AppState {
        service: service.clone(),
        admin: Arc::new(AdminAuth::new(&admin_token, args.dev)),
        config: Arc::new(HttpConfig {
            dev: args.dev,
            platform_url: args.platform_url.clone(),
            trusted_proxies: args.trusted_proxies.clone(),
            body_limit: args.body_limit,
            git_sha: option_env!("BERTH_GIT_SHA").unwrap_or("unknown").to_owned(),
        }),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "berth listening");
    eprintln!("berth: listening on http://{addr}");
    berth_http::serve(listener, berth_http::router(state), shutdown_signal()).await?;
    tracing::info!("draining background work");
    if tokio::time::timeout(Duration::from_secs(30), service.drain())
        .await
        .is_err()
    {
        tracing::warn!("background work did not finish within 30 s");
    }
    tracing::info!("stopped");
    Ok(())
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

//! `berth-agent`: a small reference agent runtime for berth (library part; the `berth-agent`
//! binary and `berth agent` both run it).
//!
//! It starts an A2A server that echoes `message/send`, registers with the platform at
//! `PLATFORM_URL` (retrying until accepted), heartbeats every `HEARTBEAT_INTERVAL_SECS`, and exits
//! cleanly with status 0 on SIGTERM or SIGINT. It is the runtime of the bundled demo template and
//! of the test container image, and depends on no berth crate: the registry protocol is the
//! contract (REFERENCE.md §2.12, §2.13).
//!
//! Environment: `WORKSPACE_ID` and `PLATFORM_URL` (required), `WORKSPACE_AUTH_TOKEN` or
//! `$WORKSPACE_CONFIG_PATH/.auth_token`, `AGENT_HOST`, `AGENT_PORT`, `AGENT_URL`,
//! `HEARTBEAT_INTERVAL_SECS`, `WORKSPACE_NAME` or the `name:` of `$WORKSPACE_CONFIG_PATH/config.yaml`;
//! for tests of a busy agent, `AGENT_MAX_CONCURRENCY` (requests at once; more connections are
//! closed unanswered) and `AGENT_REPLY_DELAY_MS` (time each `message/send` takes).
//! `BERTH_AGENT_PARENT_PID`, which berth's process backend sets, makes the agent die with that
//! server (`parent.rs`).
//!
//! Warm-pool mode (protocol `berth.pool.v1`, `docs/warm-pool.md`, `pool.rs`): when no token is
//! configured and `$WORKSPACE_CONFIG_PATH/.pool_secret` exists, the agent is a pool member. It
//! serves A2A plus `GET /berth/pool` and `POST /berth/pool/claim` (bearer: the pool secret) and
//! does not register. A claim writes the workspace's files into the config dir, deletes
//! `.pool_secret`, names the agent card, and from then on the agent registers and heartbeats with
//! the delivered `.auth_token` exactly as a normally started one. With a token configured the
//! pool routes answer 404.

mod a2a;
mod config;
mod parent;
mod pool;
mod registry;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tracing_subscriber::EnvFilter;

use crate::a2a::{AgentState, SharedCard};
use crate::config::Config;
use crate::pool::{Identity, Pool};
use crate::registry::Registry;

/// Sets up logging to stderr (`RUST_LOG`, default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Reads the configuration from the environment and runs the agent until SIGTERM or SIGINT.
pub async fn run_from_env() -> anyhow::Result<()> {
    // First of all: an agent whose server is already gone has no one to start for.
    parent::follow(std::env::var("BERTH_AGENT_PARENT_PID").ok().as_deref())?;
    let config = Config::from_lookup(|key| std::env::var(key).ok())?;
    run(config).await
}

/// Serves A2A, registers and heartbeats until SIGTERM or SIGINT; a warm-pool member first waits
/// to be claimed.
async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // Installed first, so a SIGTERM that arrives during start-up still ends in a clean exit.
    let mut signals = Signals::install()?;
    let in_flight = Arc::new(AtomicU64::new(0));
    let card = SharedCard::new(a2a::agent_card(&config.name));
    let pool = config
        .pool
        .clone()
        .map(|member| Pool::new(member, config.workspace_id.clone(), card.clone()));

    // Serve before registering: the platform may call the agent as soon as it is registered.
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        workspace.id = %config.workspace_id,
        listen = %addr,
        agent.url = %config.agent_url,
        pool = pool.is_some(),
        "A2A server listening"
    );

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut app = a2a::router(AgentState::new(
        card.clone(),
        Arc::clone(&in_flight),
        config.reply_delay,
    ));
    // Without a pool secret the pool routes do not exist: 404, as for any unknown path.
    let claimed = match pool {
        Some((pool, claimed)) => {
            app = app.merge(pool.router());
            Some(claimed)
        }
        None => None,
    };
    let listener = a2a::BusyListener::new(listener, Arc::clone(&in_flight), config.max_concurrency);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // An error means the sender is gone, which is also a reason to stop.
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });

    let outcome = tokio::select! {
        name = signals.recv() => {
            tracing::info!(signal = name, "shutting down");
            Ok(())
        }
        served = &mut server => {
            // The server only ends by itself on an error.
            served.context("A2A server task")?.context("A2A server")?;
            Err(anyhow::anyhow!("A2A server stopped unexpectedly"))
        }
        failed = lifecycle(&config, card, claimed, in_flight, started) => match failed {
            Err(e) => Err(e),
        },
    };

    let _ = stop_tx.send(true);
    if !server.is_finished() {
        match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
            Ok(served) => served.context("A2A server task")??,
            Err(_) => tracing::warn!("open A2A connections did not finish in time; exiting anyway"),
        }
    }
    outcome
}

/// What the agent does while it serves: crash on purpose (`AGENT_CRASH_AFTER_MS`), or wait for a
/// pool claim when it is a pool member, then register and heartbeat. It returns only on an
/// error; `run` ends it by dropping it on a signal.
async fn lifecycle(
    config: &Config,
    card: SharedCard,
    claimed: Option<oneshot::Receiver<Identity>>,
    in_flight: Arc<AtomicU64>,
    started: Instant,
) -> anyhow::Result<Infallible> {
    if let Some(after) = config.crash_after {
        tokio::time::sleep(after).await;
        eprintln!("berth-agent: crashing on purpose (AGENT_CRASH_AFTER_MS)");
        std::process::exit(3);
    }

    let mut registry = Registry::new(
        config.platform_url.clone(),
        config.workspace_id.clone(),
        config.token.clone(),
    )?;
    // `env` lives as long as the agent does; the reference agent has no child to pass it to.
    let (card, _env) = match claimed {
        None => ((*card.get()).clone(), BTreeMap::new()),
        Some(mut claimed) => {
            tracing::info!("pool member: waiting to be claimed");
            // Keeps a connection to the platform open while it waits (reopened before the
            // client's idle timeout), so the register after the claim needs no connect.
            let identity = loop {
                registry.warm_up().await;
                tokio::select! {
                    identity = &mut claimed => break identity
                        .context("the pool routes stopped before the member was claimed")?,
                    () = tokio::time::sleep(WARM_UP_EVERY) => {}
                }
            };
            registry.set_token(identity.token);
            // The claim handler has put the workspace's name into the served card already.
            (a2a::agent_card(&identity.name), identity.env)
        }
    };
    // Registration begins at once: a claim is answered just before this, and the platform
    // counts the time from its create to this register.
    let never = registry
        .run(
            config.agent_url.clone(),
            card,
            config.heartbeat_interval,
            in_flight,
            started,
        )
        .await;
    match never {}
}

/// How often a waiting pool member renews its connection to the platform (under the HTTP
/// client's 90 s idle timeout).
const WARM_UP_EVERY: Duration = Duration::from_secs(60);

/// How long open A2A requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The SIGTERM and SIGINT handlers.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT and names the one that came.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Installs rustls' ring provider as the process default, once a process is enough (reqwest is
/// built with rustls and no provider of its own; the agent depends on no berth crate, so this
/// mirrors `berth_provision::install_tls_provider`).
pub fn install_tls_provider() {
    #[allow(deprecated)] // ring lacks post-quantum key exchange; aws-lc needs cmake.
    let ring = rustls::crypto::ring::default_provider();
    let _ = ring.install_default();
}

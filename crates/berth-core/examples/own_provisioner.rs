//! Bring your own [`Provisioner`]: berth's core decides *when* a workspace starts, stops and is
//! purged; the provisioner decides *how*. This one only records what it was asked to do — put
//! your scheduler, VM API or job queue where it says so.
//!
//! It runs on whichever store is compiled in: SQLite in a temporary directory, or PostgreSQL at
//! `DATABASE_URL` when the crate is built with `postgres` only:
//!
//! ```text
//! cargo run -p berth-core --example own_provisioner
//! DATABASE_URL=postgres://… cargo run -p berth-core --no-default-features --features postgres --example own_provisioner
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::berth_provision::{BackendKind, Error, ProvisionRequest, Provisioner, Started};
use berth_core::berth_store::{KeyRing, WorkspaceStore};
use berth_core::{
    CoreConfig, CreateContext, CreateRequest, SystemResolver, TemplateCatalog, WorkspaceService,
};
use berth_domain::WorkspaceId;
use tokio::sync::mpsc;

/// A provisioner that hands every start to a channel.
struct Recording {
    starts: mpsc::UnboundedSender<ProvisionRequest>,
}

#[async_trait]
impl Provisioner for Recording {
    fn kind(&self) -> BackendKind {
        BackendKind::ControlPlane
    }

    async fn start(&self, request: ProvisionRequest) -> Result<Started, Error> {
        // Your backend goes here: launch the runtime with `request.env` and
        // `request.secret_files`, pointed at `request.platform_url`.
        let _ = self.starts.send(request);
        Ok(Started {
            // Where the platform reaches the agent: berth stores this URL, never the one an
            // agent of a provisioned workspace claims when it registers.
            url: Some("http://machine-1.internal:8000".into()),
            instance_id: Some("machine-1".into()),
        })
    }

    async fn stop(&self, _id: WorkspaceId) -> Result<(), Error> {
        Ok(())
    }

    async fn is_running(&self, _id: WorkspaceId) -> Result<bool, Error> {
        Ok(true)
    }
}

#[cfg(feature = "sqlite")]
async fn open_store(
    dir: &std::path::Path,
    keys: KeyRing,
) -> Result<Arc<dyn WorkspaceStore>, Box<dyn std::error::Error>> {
    Ok(Arc::new(
        berth_core::berth_store::SqliteStore::open(&dir.join("berth.db"), keys).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn open_store(
    _dir: &std::path::Path,
    keys: KeyRing,
) -> Result<Arc<dyn WorkspaceStore>, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a postgres:// URL")?;
    Ok(Arc::new(
        berth_core::berth_store::PgStore::connect(&url, keys).await?,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keys = KeyRing::parse(&KeyRing::generate_line("k1"))?;
    let store = open_store(dir.path(), keys).await?;
    let (starts, mut started) = mpsc::unbounded_channel();
    let service = WorkspaceService::new(
        store,
        Arc::new(Recording { starts }),
        Arc::new(SystemResolver::default()),
        TemplateCatalog::empty(dir.path().to_path_buf()),
        CoreConfig::default(),
    );

    let created = service
        .create(
            CreateRequest {
                name: "worker".into(),
                runtime: "claude-code".into(),
                model: "anthropic:claude-sonnet-4-5".into(),
                ..Default::default()
            },
            CreateContext {
                platform_url: "http://127.0.0.1:8080".into(),
                ..Default::default()
            },
        )
        .await?;
    let request = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await?
        .ok_or("the provisioner was dropped")?;
    assert_eq!(request.workspace_id, created.response.id);
    println!(
        "asked to start {} ({}) reporting to {}, with {} environment variables",
        request.workspace_id,
        request.runtime,
        request.platform_url,
        request.env.len()
    );
    Ok(())
}

//! berth's workspace core in-process, without HTTP: open a SQLite store, create a workspace,
//! list what is there.
//!
//! `cargo run -p berth-core --example core_without_http`
//!
//! The workspace is `external` (an agent that runs elsewhere and connects back), so no
//! provisioner is needed: [`NoBackend`] stands in. Swap in `ProcessProvisioner`,
//! `DockerProvisioner` or your own (see the `own_provisioner` example) to run agents.

use std::sync::Arc;

use berth_core::berth_provision::NoBackend;
use berth_core::berth_store::{KeyRing, SqliteStore};
use berth_core::{
    CoreConfig, CreateContext, CreateRequest, Page, SystemResolver, TemplateCatalog,
    WorkspaceService,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Secrets are sealed with this key ring before they reach the database.
    let keys = KeyRing::parse(&KeyRing::generate_line("k1"))?;
    let store = SqliteStore::open(&dir.path().join("berth.db"), keys).await?;
    let service = WorkspaceService::new(
        Arc::new(store),
        Arc::new(NoBackend),
        Arc::new(SystemResolver::default()),
        TemplateCatalog::empty(dir.path().to_path_buf()),
        CoreConfig::default(),
    );

    let request = CreateRequest {
        name: "laptop agent".into(),
        external: true,
        ..Default::default()
    };
    let context = CreateContext {
        platform_url: "http://127.0.0.1:8080".into(),
        ..Default::default()
    };
    let created = service.create(request, context).await?;
    println!(
        "created {} ({})",
        created.response.id, created.response.status
    );

    let listed = service.list(Page::default()).await?;
    for view in &listed {
        let w = &view.workspace;
        println!("{}  {:<14}  {}", w.id, w.name, w.status);
    }
    assert_eq!(listed.len(), 1, "the one workspace is listed");
    Ok(())
}

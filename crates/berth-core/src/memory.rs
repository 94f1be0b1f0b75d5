//! Seeding `initial_memories` into the v2 memory plugin (REFERENCE.md §10.1).

use async_trait::async_trait;
use berth_domain::WorkspaceId;

/// The memory plugin port: stores one memory in a workspace's private namespace.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait MemoryPlugin: Send + Sync {
    /// Stores `content` (already truncated and redacted) for the workspace.
    async fn commit_memory(&self, workspace: WorkspaceId, content: String) -> Result<(), String>;
}

/// The HTTP client of the memory plugin: `POST <base>/v1/namespaces/workspace:<id>/memories`.
#[derive(Debug, Clone)]
pub struct HttpMemoryPlugin {
    base: String,
    client: reqwest::Client,
}

impl HttpMemoryPlugin {
    /// A client for the plugin at `base` (e.g. `http://127.0.0.1:9100`).
    pub fn new(base: &str) -> Result<Self, String> {
        let client = berth_provision::client_builder_for(base)
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }
}

#[async_trait]
impl MemoryPlugin for HttpMemoryPlugin {
    async fn commit_memory(&self, workspace: WorkspaceId, content: String) -> Result<(), String> {
        let url = format!("{}/v1/namespaces/workspace:{workspace}/memories", self.base);
        let body = serde_json::json!({"content": content, "kind": "fact", "source": "runtime"});
        let resp = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("memory plugin answered {}", resp.status()))
        }
    }
}

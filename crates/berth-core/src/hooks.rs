//! Env-mutator hooks (REFERENCE.md §5.5): plugins that adjust a workspace's environment right
//! before its agent starts (e.g. inject a short-lived credential). They run in registration order
//! after berth's own preparation; the first error aborts provisioning with code `ENV_HOOK_FAILED`.

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use secrecy::SecretString;

/// One env-mutator plugin.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EnvMutator: Send + Sync {
    /// A short name for logs and failure messages.
    fn name(&self) -> String;

    /// Adjusts `env` (ordered `KEY` → secret value) for the workspace about to start.
    async fn mutate_env(
        &self,
        workspace: WorkspaceId,
        env: &mut Vec<(String, SecretString)>,
    ) -> Result<(), String>;
}

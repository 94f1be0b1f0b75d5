#![doc = include_str!("../README.md")]

pub mod cipher;
mod error;
mod model;
mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use secrecy::SecretString;

pub use cipher::{CipherError, KeyRing};
pub use error::Error;
pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The persistence port of the workspace core.
///
/// Implemented by [`SqliteStore`] (the embedded default) and [`PgStore`] (production), which pass
/// one shared contract suite. Secret values cross this trait in plaintext (as [`SecretString`]) and
/// are sealed with the store's [`KeyRing`] before they reach the database.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Which of the given candidate names are taken among live (non-removed) siblings under
    /// `parent` (`None` = the root level).
    async fn taken_names(
        &self,
        parent: Option<WorkspaceId>,
        candidates: Vec<String>,
    ) -> Result<Vec<String>>;

    /// Writes a whole create in one transaction: the row, compute, secrets, canvas layout, token,
    /// events and idempotency record. Fails with [`Error::NameTaken`] if the name was taken
    /// concurrently, [`Error::ParentNotFound`] if the parent does not exist or is removed,
    /// [`Error::IdempotencyKeyUsed`] if another create already used the key; nothing is written
    /// on any error.
    async fn create_workspace(&self, new: NewWorkspace) -> Result<()>;

    /// The stored result of a create that used this idempotency key, if any.
    async fn idempotent_create(&self, key: &str) -> Result<Option<IdempotentCreate>>;

    /// Live workspaces in creation order, one page.
    async fn list_workspaces(&self, page: Page) -> Result<Vec<Workspace>>;

    /// One workspace, including removed ones.
    async fn get_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;

    /// Applies a status transition as a compare-and-set; records its event in the same
    /// transaction only when the row changed. Returns whether it changed.
    async fn transition(&self, id: WorkspaceId, change: StatusChange) -> Result<bool>;

    /// Replaces the workspace's `workspace_config` document.
    async fn put_workspace_config(&self, id: WorkspaceId, data: serde_json::Value) -> Result<()>;

    /// The workspace's `workspace_config` document, if any.
    async fn workspace_config(&self, id: WorkspaceId) -> Result<Option<serde_json::Value>>;

    /// The workspace's secrets, decrypted, ordered by key.
    async fn workspace_secrets(&self, id: WorkspaceId) -> Result<Vec<(String, SecretString)>>;

    /// Events in sequence order, optionally for one workspace, after a sequence id.
    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRecord>>;

    /// Deletes idempotency records older than `older_than`; returns how many went.
    async fn prune_idempotency(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<u64>;
}

/// Shorthand used by [`WorkspaceStore::transition`] callers.
impl StatusChange {
    /// A change with an empty event payload.
    pub fn new(transition: Transition) -> Self {
        Self {
            transition,
            payload: serde_json::json!({}),
            failure: None,
        }
    }
}

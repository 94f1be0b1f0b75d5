#![doc = include_str!("../README.md")]

pub mod a2a;
pub mod activity;
mod broadcast;
mod bundles;
mod create;
mod display;
mod events;
mod heartbeats;
mod hooks;
mod inside;
pub mod lifecycle;
mod loops;
mod memory;
mod metrics;
mod notify;
mod pool;
mod provisioning;
mod queue;
pub mod registry;
mod resolver;
mod secrets;
mod service;
mod sweeps;
mod template_admin;
mod templates;
pub mod token;
mod viewport;

pub use a2a::{A2aCaller, A2aError, A2aReply, A2aSettings};
pub use activity::{ACTIVITY_TYPES, ActivityEntry, ActivityError, ActivityRetention};
pub use broadcast::{BROADCAST_MESSAGE_MAX, BroadcastError};
pub use bundles::{
    BUNDLE_MAX_DEPTH, BUNDLE_MAX_FILES, BUNDLE_MAX_WORKSPACES, Bundle, BundleError, BundleSkill,
    BundleTool, ImportedWorkspace,
};
pub use create::{
    CreateContext, CreateError, CreateRequest, CreateResponse, Created, InitialMemory,
};
pub use display::{DisplayError, DisplayStatus};
pub use events::{
    CutOff, Delivery, Encoding, EventConfig, EventReceiver, EventScope, LiveEvent, LiveEvents,
};
pub use heartbeats::HeartbeatBatching;
pub use hooks::EnvMutator;
pub use inside::{
    CREDENTIAL_FILES, Diagnosis, FileChange, InsideConfig, InsideFailure, Step, TerminalSession,
    is_credential_file,
};
pub use lifecycle::{Budget, LifecycleError, RestartOutcome, WorkspaceState};
pub use loops::{
    LOOP_A2A_QUEUE, LOOP_EVENT_RETENTION, LOOP_HEALTH, LOOP_HIBERNATION, LOOP_LIVENESS,
    LOOP_ORPHANS, LOOP_PROVISION_TIMEOUT, LoopStatus, LoopTicks,
};
pub use memory::{HttpMemoryPlugin, MemoryPlugin};
pub use metrics::{METRICS_CONTENT_TYPE, Metrics};
pub use notify::{NotifyAttachment, NotifyError};
pub use pool::{
    MAX_POOL_SIZE, POOL_PROTOCOL, POOL_SECRET_FILE, PoolError, PoolSettings, PoolSpec, PoolStatus,
};
pub use queue::{A2A_QUEUE_PAGE_MAX, DrainReport, QueueEntry, QueueViewer};
pub use registry::{
    Discovered, HeartbeatRequest, Peer, Principal, RegisterRequest, Registered, RegistryError,
};
pub use resolver::{HostResolver, SystemResolver};
pub use secrets::{
    DEFAULT_REENCRYPT_BATCH, GLOBAL_RESTART_CONCURRENCY, MODEL_KEY, PROVIDER_KEY, SECRET_KEY_CAP,
    SECRET_VALUE_CAP, SecretEntry, SecretError, is_secret_key,
};
pub use service::{CoreConfig, HEALTH_CHECK_TIMEOUT, WorkspaceService, WorkspaceView};
pub use template_admin::{
    ImportError, Imported, TEMPLATE_IMPORT_MAX_FILES, TemplateImport, TemplateInfo, TemplateIssue,
    TemplateListing, template_id,
};
pub use templates::TemplateCatalog;

#[cfg(feature = "mock")]
pub use hooks::MockEnvMutator;
#[cfg(feature = "mock")]
pub use memory::MockMemoryPlugin;
#[cfg(feature = "mock")]
pub use resolver::MockHostResolver;

/// The ports' crates, so an embedder needs only this one dependency: the stores
/// (`berth_store::SqliteStore`, `berth_store::PgStore`, by cargo feature) and the provisioners
/// (`berth_provision::ProcessProvisioner`, `DockerProvisioner`, `ControlPlaneProvisioner`, or its
/// own [`berth_provision::Provisioner`]).
pub use berth_provision;
pub use berth_store;

/// Store records the core's API hands out.
pub use berth_store::{
    ActivityQuery, ActivityRecord, ActivitySource, EventRecord, Page, ReencryptReport, TokenInfo,
    Viewport, Workspace,
};

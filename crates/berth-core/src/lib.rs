#![doc = include_str!("../README.md")]

mod create;
mod events;
mod hooks;
pub mod lifecycle;
mod memory;
mod provisioning;
pub mod registry;
mod resolver;
mod secrets;
mod service;
mod sweeps;
mod templates;
pub mod token;

pub use create::{
    CreateContext, CreateError, CreateRequest, CreateResponse, Created, InitialMemory,
};
pub use events::{EventConfig, EventReceiver};
pub use hooks::EnvMutator;
pub use lifecycle::{LifecycleError, RestartOutcome, WorkspaceState};
pub use memory::{HttpMemoryPlugin, MemoryPlugin};
pub use registry::{
    Discovered, HeartbeatRequest, Peer, Principal, RegisterRequest, Registered, RegistryError,
};
pub use resolver::{HostResolver, SystemResolver};
pub use secrets::{
    DEFAULT_REENCRYPT_BATCH, GLOBAL_RESTART_CONCURRENCY, MODEL_KEY, PROVIDER_KEY, SECRET_KEY_CAP,
    SECRET_VALUE_CAP, SecretEntry, SecretError, is_secret_key,
};
pub use service::{CoreConfig, WorkspaceService, WorkspaceView};
pub use templates::TemplateCatalog;

#[cfg(feature = "mock")]
pub use hooks::MockEnvMutator;
#[cfg(feature = "mock")]
pub use memory::MockMemoryPlugin;
#[cfg(feature = "mock")]
pub use resolver::MockHostResolver;

/// Store records the core's API hands out.
pub use berth_store::{EventRecord, Page, ReencryptReport, TokenInfo, Workspace};

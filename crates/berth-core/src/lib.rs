#![doc = include_str!("../README.md")]

mod create;
mod memory;
mod provisioning;
mod resolver;
mod service;
mod templates;
pub mod token;

pub use create::{
    CreateContext, CreateError, CreateRequest, CreateResponse, Created, InitialMemory,
};
pub use memory::{HttpMemoryPlugin, MemoryPlugin};
pub use resolver::{HostResolver, SystemResolver};
pub use service::{CoreConfig, WorkspaceService, WorkspaceView};
pub use templates::TemplateCatalog;

#[cfg(feature = "mock")]
pub use memory::MockMemoryPlugin;
#[cfg(feature = "mock")]
pub use resolver::MockHostResolver;

/// Store records the core's API hands out.
pub use berth_store::{Page, Workspace};

#![doc = include_str!("../README.md")]

pub mod access;
pub mod compute;
pub mod event;
pub mod external;
pub mod heartbeat;
pub mod ids;
pub mod naming;
pub mod provider;
pub mod redact;
pub mod runtime;
pub mod ssrf;
pub mod status;
pub mod template;
pub mod text;
pub mod validation;

pub use ids::WorkspaceId;
pub use status::WorkspaceStatus;

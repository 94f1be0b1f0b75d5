#![doc = include_str!("../README.md")]

mod agent;
mod server;

pub use agent::{FakeAgent, Reply};
pub use berth_client::Client;
/// The limits and switches of the files, exec and terminal routes ([`Builder::inside`]).
pub use berth_core::InsideConfig;
pub use server::{Builder, TestServer};

/// Why the test kit could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened (or the PostgreSQL database created).
    #[error("store: {0}")]
    Store(String),
    /// A socket, file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A call to the server failed.
    #[error(transparent)]
    Client(#[from] berth_client::Error),
    /// The server answered something the kit did not expect.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

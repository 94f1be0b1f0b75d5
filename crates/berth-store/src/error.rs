//! The store's backend-neutral error.

use crate::cipher::CipherError;

/// What went wrong in the store, in the store's words; callers never match on sqlx.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workspace does not exist.
    #[error("workspace not found")]
    NotFound,
    /// The name is taken by a live sibling (the `workspaces_parent_name_uniq` rule).
    #[error("workspace name already in use")]
    NameTaken,
    /// The parent workspace does not exist or is removed.
    #[error("parent workspace not found")]
    ParentNotFound,
    /// The workspace's status does not allow the operation.
    #[error("workspace is {0}")]
    InvalidState(berth_domain::status::WorkspaceStatus),
    /// The workspace already has the maximum number of live tokens.
    #[error("too many live tokens")]
    TooManyTokens,
    /// Another create already used this idempotency key.
    #[error("idempotency key already used")]
    IdempotencyKeyUsed,
    /// Another unique constraint was violated.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The constraint, as far as the backend names it.
        constraint: String,
    },
    /// A stored secret cannot be opened.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// A stored row holds a value berth cannot read (e.g. an unknown status).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return Error::Conflict {
                        constraint: db.constraint().unwrap_or_else(|| db.message()).to_owned(),
                    };
                }
                sqlx::error::ErrorKind::ForeignKeyViolation => return Error::ParentNotFound,
                _ => {}
            }
        }
        Error::Backend(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Backend(Box::new(e))
    }
}

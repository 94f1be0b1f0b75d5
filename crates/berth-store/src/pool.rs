//! Warm-pool members (`pool_members`): agents started before a create asks for them, claimed by a
//! create inside its own transaction (see [`crate::NewWorkspace::claim`]).

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

/// Where a pool member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMemberState {
    /// Its backend start is under way.
    Starting,
    /// Started and answering: a create may claim it.
    Ready,
    /// A create took it: it is that workspace's agent now.
    Claimed,
}

impl PoolMemberState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Claimed => "claimed",
        }
    }

    fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "starting" => Ok(Self::Starting),
            "ready" => Ok(Self::Ready),
            "claimed" => Ok(Self::Claimed),
            other => Err(crate::Error::Corrupt(format!(
                "pool member state {other:?}"
            ))),
        }
    }
}

/// A member about to be started.
#[derive(Debug, Clone)]
pub struct NewPoolMember {
    /// The workspace id the member takes when claimed.
    pub id: WorkspaceId,
    /// The pool's name (its template).
    pub pool: String,
    /// The key of what it is started with; a create claims it only with an equal key.
    pub shape: String,
    /// The member's pool credential, sealed by the store.
    pub secret: SecretString,
}

/// A member as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    /// The workspace id it takes when claimed.
    pub id: WorkspaceId,
    /// The pool's name.
    pub pool: String,
    /// The key of what it was started with.
    pub shape: String,
    /// Where it is in its life.
    pub state: PoolMemberState,
    /// Its agent's URL, once started.
    pub url: Option<String>,
    /// The backend's instance id, once started.
    pub instance_id: Option<String>,
    /// When its start began.
    pub created_at: DateTime<Utc>,
    /// When it became ready.
    pub ready_at: Option<DateTime<Utc>>,
    /// When a create took it.
    pub claimed_at: Option<DateTime<Utc>>,
}

/// The member a create took, returned by [`crate::WorkspaceStore::create_workspace`].
#[derive(Debug, Clone)]
pub struct ClaimedMember {
    /// The workspace id: the new row's.
    pub id: WorkspaceId,
    /// Its agent's URL (recorded on the row as the provisioner's).
    pub url: String,
    /// The backend's instance id.
    pub instance_id: Option<String>,
    /// Its pool credential, to hand it the workspace's identity; `None` when the key ring could
    /// not open it (the member cannot be handed over: the workspace starts cold).
    pub secret: Option<SecretString>,
}

/// Associated data binding a sealed pool credential to its member.
pub(crate) fn secret_aad(id: WorkspaceId) -> Vec<u8> {
    format!("pool_members/{id}").into_bytes()
}

pub(crate) const MEMBER_COLUMNS: &str =
    "id, pool, shape, state, url, instance_id, created_at, ready_at, claimed_at";

pub(crate) const INSERT: &str = "\
INSERT INTO pool_members (id, pool, shape, state, secret, secret_key_id, created_at) \
VALUES ($1, $2, $3, 'starting', $4, $5, $6)";

pub(crate) const MARK_READY: &str = "\
UPDATE pool_members SET state = 'ready', url = $1, instance_id = $2, ready_at = $3 \
WHERE id = $4 AND state = 'starting'";

/// Deletes a member that no create took; a claimed one is a workspace's and stays.
pub(crate) const REMOVE_UNCLAIMED: &str =
    "DELETE FROM pool_members WHERE id = $1 AND state <> 'claimed'";

pub(crate) const PRUNE_CLAIMED: &str =
    "DELETE FROM pool_members WHERE state = 'claimed' AND claimed_at < $1";

/// The oldest ready member of a shape, taken for the row being created. PostgreSQL skips members
/// another create has locked, so concurrent creates take different ones instead of queueing on
/// the same row and finding it gone; SQLite's writers are serialised by `BEGIN IMMEDIATE`.
pub(crate) fn claim_sql(sqlite: bool) -> String {
    let lock = if sqlite {
        ""
    } else {
        " FOR UPDATE SKIP LOCKED"
    };
    format!(
        "UPDATE pool_members SET state = 'claimed', claimed_at = $2 \
         WHERE id = (SELECT m.id FROM pool_members m WHERE m.shape = $1 AND m.state = 'ready' \
         ORDER BY m.ready_at, m.id LIMIT 1{lock}) AND state = 'ready' \
         RETURNING id, url, instance_id, secret, secret_key_id"
    )
}

pub(crate) fn list_sql() -> String {
    format!("SELECT {MEMBER_COLUMNS} FROM pool_members ORDER BY pool, created_at, id")
}

/// The raw row.
#[derive(sqlx::FromRow)]
pub(crate) struct MemberRow {
    id: Uuid,
    pool: String,
    shape: String,
    state: String,
    url: Option<String>,
    instance_id: Option<String>,
    created_at: DateTime<Utc>,
    ready_at: Option<DateTime<Utc>>,
    claimed_at: Option<DateTime<Utc>>,
}

impl MemberRow {
    pub(crate) fn into_member(self) -> crate::Result<PoolMember> {
        Ok(PoolMember {
            id: WorkspaceId::from(self.id),
            pool: self.pool,
            shape: self.shape,
            state: PoolMemberState::parse(&self.state)?,
            url: self.url,
            instance_id: self.instance_id,
            created_at: self.created_at,
            ready_at: self.ready_at,
            claimed_at: self.claimed_at,
        })
    }
}

/// The claim statement's row.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub(crate) id: Uuid,
    pub(crate) url: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) secret: Vec<u8>,
    pub(crate) secret_key_id: String,
}

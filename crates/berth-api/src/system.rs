//! Health, build info, loop liveness, the canvas viewport and the display report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`: `ok` (200) or `unavailable` (503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
}

/// `GET /buildinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildInfo {
    /// The commit the server was built from.
    pub git_sha: String,
    /// The crate version.
    pub version: String,
}

/// One background loop of `GET /admin/liveness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoopLiveness {
    /// Its configured interval.
    pub interval_seconds: u64,
    /// RFC 3339 (seconds) of its last tick.
    pub last_tick_at: Option<String>,
    /// Seconds since the last tick.
    pub seconds_ago: Option<i64>,
    /// Whether it is late.
    pub stale: bool,
    /// When it counts as late.
    pub stale_after_seconds: u64,
}

/// `GET /admin/liveness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    /// The names of late loops.
    pub stale: Vec<String>,
    /// Each loop by name.
    pub subsystems: BTreeMap<String, LoopLiveness>,
    /// Whether any loop ticked yet.
    pub sweeps_started: bool,
}

/// `GET /admin/pools`: the warm pools this server was configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pools {
    /// Each pool, in configuration order (empty: none configured).
    pub pools: Vec<PoolInfo>,
}

/// One warm pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolInfo {
    /// Its name: the template its members are started from.
    pub name: String,
    /// The backend its members run on (`process`, `docker`).
    pub backend: String,
    /// Ready members it keeps.
    pub target: u64,
    /// Members ready to be claimed now.
    pub ready: u64,
    /// Members starting now.
    pub starting: u64,
    /// Members claimed by creates in the last minute, on any server of the installation.
    pub claimed_last_minute: u64,
    /// Creates that matched the pool but found no ready member (they started cold), counted by
    /// this server since it started.
    pub misses: u64,
    /// Members claimed through this server since it started.
    pub claims: u64,
    /// Member starts that failed, and members found dead, by this server since it started.
    pub failures: u64,
}

/// `GET /canvas/viewport`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Viewport {
    /// Horizontal pan.
    pub x: f64,
    /// Vertical pan.
    pub y: f64,
    /// Zoom factor.
    pub zoom: f64,
}

/// `PUT /canvas/viewport` body: every field optional; `null` reads as omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ViewportPatch {
    /// Horizontal pan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    /// Vertical pan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
    /// Zoom factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoom: Option<f64>,
}

/// `GET /workspaces/{id}/display`: no display (`display_not_enabled`), or one that berth cannot
/// serve a session for (`display_session_unavailable`, with its settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Display {
    /// Always `false`.
    pub available: bool,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    /// Display mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Why it is not available.
    pub reason: String,
    /// `not_configured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
}

//! Background-loop liveness (REFERENCE-2.md §5 `GET /admin/liveness`, fixing §9.5 #49): every
//! pass of every sweep records a tick here; the report lists each known loop with its last tick,
//! its age, its expected interval and whether it is stale.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::service::WorkspaceService;

/// The liveness sweep (`sweep_liveness`), every `sweep_interval`.
pub const LOOP_LIVENESS: &str = "liveness_sweep";
/// The health sweep (`sweep_health`), every `sweep_interval`.
pub const LOOP_HEALTH: &str = "health_sweep";
/// The provision-timeout sweep, every `sweep_interval`.
pub const LOOP_PROVISION_TIMEOUT: &str = "provision_timeout_sweep";
/// The event-retention sweep, every `sweep_interval` (it prunes only when due).
pub const LOOP_EVENT_RETENTION: &str = "event_retention_sweep";
/// The hibernation monitor, every 2 minutes.
pub const LOOP_HIBERNATION: &str = "hibernation_monitor";
/// The orphan sweep, at start and every minute.
pub const LOOP_ORPHANS: &str = "orphan_sweep";
/// The A2A busy-queue pass (upkeep and drains), every `sweep_interval`.
pub const LOOP_A2A_QUEUE: &str = "a2a_queue_drain";

/// Last tick of each loop, shared by the service's clones.
#[derive(Debug, Default)]
pub struct LoopTicks {
    ticks: Mutex<HashMap<&'static str, DateTime<Utc>>>,
    /// When the sweeper recorded its first tick (the start of every loop's clock).
    started: Mutex<Option<DateTime<Utc>>>,
}

impl LoopTicks {
    /// Records a completed pass of `name`, now.
    pub fn tick(&self, name: &'static str) {
        self.tick_at(name, Utc::now());
    }

    fn tick_at(&self, name: &'static str, at: DateTime<Utc>) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(at);
        self.ticks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, at);
    }

    fn last(&self, name: &str) -> Option<DateTime<Utc>> {
        self.ticks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    fn started(&self) -> Option<DateTime<Utc>> {
        *self.started.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One loop in the liveness report.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopStatus {
    /// The loop's name (`liveness_sweep`, …).
    pub name: &'static str,
    /// Its last completed pass; `None` before the first.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Whole seconds since the last pass.
    pub seconds_ago: Option<i64>,
    /// How often it is meant to run.
    pub interval: Duration,
    /// How long without a pass makes it stale: three intervals (at least three sweep intervals,
    /// since every loop runs inside the sweep tick).
    pub stale_after: Duration,
    /// Whether the sweeper runs here and this loop has not ticked for `stale_after` (counted from
    /// its last tick, or from the sweeper's start when it never ticked). `false` while the
    /// sweeper has not started in this process (another instance may hold the sweep lease).
    pub stale: bool,
}

impl WorkspaceService {
    /// The tick recorder of the background loops.
    pub fn loop_ticks(&self) -> &LoopTicks {
        &self.loops
    }

    /// Every known loop with its expected interval.
    fn known_loops(&self) -> [(&'static str, Duration); 7] {
        let every = self.config.sweep_interval;
        [
            (LOOP_LIVENESS, every),
            (LOOP_HEALTH, every),
            (LOOP_PROVISION_TIMEOUT, every),
            (LOOP_EVENT_RETENTION, every),
            (LOOP_HIBERNATION, Duration::from_secs(120)),
            (LOOP_ORPHANS, Duration::from_secs(60)),
            (LOOP_A2A_QUEUE, every),
        ]
    }

    /// The liveness report as of `now`, in a fixed order.
    pub fn loop_liveness(&self, now: DateTime<Utc>) -> Vec<LoopStatus> {
        let started = self.loops.started();
        let sweep = self.config.sweep_interval;
        self.known_loops()
            .into_iter()
            .map(|(name, interval)| {
                let last = self.loops.last(name);
                let stale_after = interval.max(sweep).saturating_mul(3);
                let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
                let stale = match (last, started) {
                    (Some(t), _) | (None, Some(t)) => age(t) > stale_after,
                    (None, None) => false,
                };
                LoopStatus {
                    name,
                    last_tick_at: last,
                    seconds_ago: last.map(|t| (now - t).num_seconds().max(0)),
                    interval,
                    stale_after,
                    stale,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_recorded_and_the_first_one_starts_the_clock() {
        let t = LoopTicks::default();
        assert_eq!(t.started(), None);
        let at = Utc::now() - chrono::Duration::seconds(30);
        t.tick_at(LOOP_LIVENESS, at);
        t.tick_at(LOOP_HEALTH, at + chrono::Duration::seconds(5));
        assert_eq!(t.started(), Some(at));
        assert_eq!(t.last(LOOP_LIVENESS), Some(at));
        assert_eq!(t.last(LOOP_ORPHANS), None);
    }
}

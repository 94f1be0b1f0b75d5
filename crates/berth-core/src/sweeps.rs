//! Background sweeps: liveness without Redis (DECISIONS.md §2.12), the health check of
//! container workspaces against their provisioner, provision timeouts, orphans, and the
//! hibernation monitor.

use berth_domain::runtime::is_external_like;
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_provision::BackendKind;
use berth_store::{Lapsed, Page, StatusChange};
use tokio::sync::watch;

use crate::service::WorkspaceService;

/// How often the hibernation monitor runs (REFERENCE.md §11.3).
const HIBERNATION_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(120);

impl WorkspaceService {
    /// One liveness pass: `online`/`degraded` workspaces whose last heartbeat is older than
    /// their window go `offline` (container runtimes) or `awaiting_agent` (external-like). The
    /// clock is the database's `last_heartbeat_at`, so a restarted server resumes where it was.
    pub async fn sweep_liveness(&self) -> Result<Vec<Lapsed>, berth_store::Error> {
        let now = berth_store::now();
        let container_cutoff =
            now - chrono::Duration::from_std(self.config.liveness_window).unwrap_or_default();
        let external_cutoff =
            now - chrono::Duration::from_std(self.config.remote_stale_after).unwrap_or_default();
        let lapsed = self
            .store
            .mark_lapsed(container_cutoff, external_cutoff)
            .await?;
        for l in &lapsed {
            tracing::info!(workspace.id = %l.id, status = %l.status, "liveness lapsed");
            if l.status == WorkspaceStatus::Offline {
                self.request_restart(l.id).await;
            }
        }
        Ok(lapsed)
    }

    /// One health pass: asks the provisioner whether each `online`/`degraded` container
    /// workspace still runs; a definite "no" moves it `offline`. A provisioner error is never
    /// taken for death.
    pub async fn sweep_health(&self) -> Result<Vec<berth_domain::WorkspaceId>, berth_store::Error> {
        if self.provisioner.kind() == BackendKind::None {
            return Ok(Vec::new());
        }
        let rows = self.store.list_workspaces(Page::default()).await?;
        let mut dead = Vec::new();
        for w in rows {
            if !matches!(
                w.status,
                WorkspaceStatus::Online | WorkspaceStatus::Degraded
            ) || is_external_like(&w.runtime)
                || w.runtime == "mock"
            {
                continue;
            }
            match self.provisioner.is_running(w.id).await {
                Ok(true) => {}
                Ok(false) => {
                    if self
                        .store
                        .transition(w.id, StatusChange::new(Transition::WentOffline))
                        .await?
                    {
                        tracing::warn!(workspace.id = %w.id, "agent process is gone; workspace offline");
                        dead.push(w.id);
                        self.request_restart(w.id).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(workspace.id = %w.id, error = %e, "health check failed; not treated as death")
                }
            }
        }
        Ok(dead)
    }

    /// The provisioning deadline of a runtime: its manifest's `provision_timeout_seconds`, else
    /// 30 min for hermes, else the configured default.
    pub fn provision_timeout_for(&self, runtime: &str) -> std::time::Duration {
        match self.templates.provision_timeout_secs(runtime) {
            Some(s) if s > 0 => std::time::Duration::from_secs(s.unsigned_abs()),
            _ if runtime == "hermes" => std::time::Duration::from_secs(1800),
            _ => self.config.provision_timeout,
        }
    }

    /// One provision-timeout pass (REFERENCE.md §11.4): a workspace still `provisioning` past
    /// its runtime's deadline is marked `failed` with code `TIMEOUT`, and its agent stopped. The
    /// age counts from when provisioning started, not from `updated_at` (DECISIONS.md §2.16).
    pub async fn sweep_provision_timeouts(
        &self,
    ) -> Result<Vec<berth_domain::WorkspaceId>, berth_store::Error> {
        let now = berth_store::now();
        let mut failed = Vec::new();
        for (id, runtime, started) in self.store.provisioning().await? {
            let Some(started) = started else { continue };
            let limit = self.provision_timeout_for(&runtime);
            let age = (now - started).to_std().unwrap_or_default();
            if age < limit {
                continue;
            }
            let secs = limit.as_secs();
            let message = format!("provisioning timed out after {secs}s");
            let change = StatusChange {
                transition: Transition::ProvisionFailed,
                payload: serde_json::json!({
                    "error": message, "code": "TIMEOUT", "timeout_secs": secs, "runtime": runtime,
                    "source": "provision_timeout_sweep",
                }),
                failure: Some(("TIMEOUT".to_owned(), message)),
            };
            if self.record_provision_failure(id, change).await? {
                tracing::warn!(workspace.id = %id, timeout_secs = secs, "provisioning timed out");
                failed.push(id);
            }
        }
        Ok(failed)
    }

    /// One orphan pass (REFERENCE.md §11.5, DECISIONS.md §2.15): backend resources of
    /// workspaces that no longer exist, or are removed, are purged. Runs at start and
    /// periodically; a backend error skips the pass. Only what the provisioner reports as this
    /// installation's is considered: the Docker provisioner lists the containers labelled with
    /// the database's installation id, so another installation's (another database on the same
    /// daemon), unknown to this database, are never taken for orphans.
    pub async fn sweep_orphans(
        &self,
    ) -> Result<Vec<berth_domain::WorkspaceId>, berth_store::Error> {
        let managed = match self.provisioner.managed().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "orphan sweep skipped: backend error");
                return Ok(Vec::new());
            }
        };
        // A warm-pool member holds resources under the id of a workspace that does not exist
        // yet (`pool.rs`): not an orphan while its record is there.
        let members = self.unclaimed_members().await?;
        let mut purged = Vec::new();
        for id in managed {
            if members.contains(&id) {
                continue;
            }
            let orphan = match self.store.get_workspace(id).await? {
                None => true,
                Some(w) => w.status == WorkspaceStatus::Removed,
            };
            if !orphan {
                continue;
            }
            match self.provisioner.purge(id).await {
                Ok(()) => {
                    tracing::info!(workspace.id = %id, "orphaned backend resources removed");
                    purged.push(id);
                }
                Err(e) => tracing::warn!(workspace.id = %id, error = %e, "orphan purge failed"),
            }
        }
        Ok(purged)
    }

    /// One hibernation-monitor pass (REFERENCE.md §11.3) as of `now`: every candidate (online or
    /// degraded, not external-like, no active tasks, `hibernation_idle_minutes` set) whose last
    /// sign of activity is at least that many minutes before `now` is hibernated. Activity is
    /// what the event log and `last_outbound_at` record, not heartbeats: the reference's
    /// heartbeat clock only ever caught dead agents (§12 #30). Returns the hibernated ids.
    pub async fn sweep_hibernation(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<berth_domain::WorkspaceId>, berth_store::Error> {
        let mut hibernated = Vec::new();
        for c in self.store.hibernation_candidates().await? {
            // Checked: a window beyond the calendar (a row written before PATCH bounded it)
            // is never over, where the unchecked sum panicked the sweeper.
            let idle_until = chrono::Duration::try_minutes(c.idle_minutes)
                .and_then(|window| c.last_active_at.checked_add_signed(window));
            if idle_until.is_none_or(|t| t > now) {
                continue;
            }
            // Not forced: the claim re-checks `active_tasks = 0` atomically, so a heartbeat
            // that reported work since the read wins.
            match self.hibernate(c.id, false).await {
                Ok(()) => {
                    tracing::info!(workspace.id = %c.id, idle_minutes = c.idle_minutes, "idle workspace hibernated");
                    hibernated.push(c.id);
                }
                Err(crate::LifecycleError::Store { source, .. }) => return Err(source),
                Err(e) => {
                    tracing::debug!(workspace.id = %c.id, reason = %e, "idle workspace not hibernated")
                }
            }
        }
        Ok(hibernated)
    }

    /// Runs the sweeps every `sweep_interval` until `stop` turns true (the orphan sweep at
    /// start and then every minute), and keeps the warm pools filled meanwhile (`pool.rs`:
    /// one refiller per installation, the server that runs the sweeps), draining them at the end.
    pub async fn run_sweeps(&self, stop: watch::Receiver<bool>) {
        tokio::join!(self.sweep_loop(stop.clone()), self.run_pools(stop));
    }

    async fn sweep_loop(&self, mut stop: watch::Receiver<bool>) {
        if let Err(e) = self.sweep_orphans().await {
            tracing::error!(error = %e, "orphan sweep failed");
        }
        self.loops.tick(crate::loops::LOOP_ORPHANS);
        let mut last_orphan_sweep = tokio::time::Instant::now();
        let mut last_hibernation_sweep = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.sweep_liveness().await {
                tracing::error!(error = %e, "liveness sweep failed");
            }
            self.loops.tick(crate::loops::LOOP_LIVENESS);
            if let Err(e) = self.sweep_health().await {
                tracing::error!(error = %e, "health sweep failed");
            }
            self.loops.tick(crate::loops::LOOP_HEALTH);
            if let Err(e) = self.sweep_provision_timeouts().await {
                tracing::error!(error = %e, "provision-timeout sweep failed");
            }
            self.loops.tick(crate::loops::LOOP_PROVISION_TIMEOUT);
            if let Err(e) = self.prune_events_if_due().await {
                tracing::error!(error = %e, "event retention sweep failed");
            }
            self.loops.tick(crate::loops::LOOP_EVENT_RETENTION);
            match self.sweep_a2a_queue().await {
                Ok(n) if n > 0 => tracing::debug!(targets = n, "a2a queue drains started"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "a2a queue sweep failed"),
            }
            self.loops.tick(crate::loops::LOOP_A2A_QUEUE);
            if last_hibernation_sweep.elapsed() >= HIBERNATION_SWEEP_EVERY {
                last_hibernation_sweep = tokio::time::Instant::now();
                if let Err(e) = self.sweep_hibernation(berth_store::now()).await {
                    tracing::error!(error = %e, "hibernation sweep failed");
                }
                self.loops.tick(crate::loops::LOOP_HIBERNATION);
            }
            if last_orphan_sweep.elapsed() >= std::time::Duration::from_secs(60) {
                last_orphan_sweep = tokio::time::Instant::now();
                if let Err(e) = self.sweep_orphans().await {
                    tracing::error!(error = %e, "orphan sweep failed");
                }
                self.loops.tick(crate::loops::LOOP_ORPHANS);
            }
        }
    }
}

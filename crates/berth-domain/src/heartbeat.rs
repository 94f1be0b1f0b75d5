//! What a heartbeat does to a workspace's status (REFERENCE.md §1.3, §2.13 step 6), as a pure
//! function of the current status and the report.

use serde_json::{Value, json};

use crate::status::{Transition, WorkspaceStatus};

/// Error rate at or above which a workspace is degraded.
pub const DEGRADE_ERROR_RATE: f64 = 0.5;
/// Error rate below which a degraded workspace recovers.
pub const RECOVER_ERROR_RATE: f64 = 0.1;
/// Largest `monthly_spend` accepted, in cents.
pub const MONTHLY_SPEND_MAX: i64 = 1_000_000_000_000;

/// The status-relevant part of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatReport {
    /// Error rate over the agent's recent requests.
    pub error_rate: f64,
    /// A sample error message.
    pub sample_error: String,
    /// `""` or `"wedged"`.
    pub runtime_state: String,
    /// The adapter manages its own status (`status_mgmt` capability): no error-rate inference.
    pub status_mgmt: bool,
}

/// The transition a heartbeat causes, with its event payload, or `None`.
pub fn evaluate(current: WorkspaceStatus, r: &HeartbeatReport) -> Option<(Transition, Value)> {
    use WorkspaceStatus as S;
    match current {
        S::Offline => Some((Transition::HeartbeatRecovered, json!({}))),
        S::Provisioning | S::AwaitingAgent => Some((
            Transition::HeartbeatRecovered,
            json!({"recovered_from": current}),
        )),
        S::Online if r.runtime_state == "wedged" => Some((
            Transition::Degraded,
            json!({"runtime_state": "wedged", "sample_error": r.sample_error}),
        )),
        S::Online if !r.status_mgmt && r.error_rate >= DEGRADE_ERROR_RATE => Some((
            Transition::Degraded,
            json!({"error_rate": r.error_rate, "sample_error": r.sample_error}),
        )),
        S::Degraded
            if !r.status_mgmt
                && r.error_rate < RECOVER_ERROR_RATE
                && r.runtime_state.is_empty() =>
        {
            Some((Transition::Recovered, json!({})))
        }
        _ => None,
    }
}

/// `monthly_spend` clamped to `[0, 1e12]`; zero means "no update".
pub fn clamp_monthly_spend(cents: i64) -> Option<i64> {
    let c = cents.clamp(0, MONTHLY_SPEND_MAX);
    (c > 0).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkspaceStatus as S;

    fn report(rate: f64, state: &str) -> HeartbeatReport {
        HeartbeatReport {
            error_rate: rate,
            sample_error: "e".into(),
            runtime_state: state.into(),
            status_mgmt: false,
        }
    }

    #[test]
    fn every_row() {
        assert_eq!(
            evaluate(S::Offline, &report(0.0, "")),
            Some((Transition::HeartbeatRecovered, json!({})))
        );
        assert_eq!(
            evaluate(S::Provisioning, &report(0.9, "")),
            Some((
                Transition::HeartbeatRecovered,
                json!({"recovered_from": "provisioning"})
            ))
        );
        assert_eq!(
            evaluate(S::AwaitingAgent, &report(0.0, "")),
            Some((
                Transition::HeartbeatRecovered,
                json!({"recovered_from": "awaiting_agent"})
            ))
        );
        assert_eq!(
            evaluate(S::Online, &report(0.0, "wedged")),
            Some((
                Transition::Degraded,
                json!({"runtime_state": "wedged", "sample_error": "e"})
            ))
        );
        assert_eq!(
            evaluate(S::Online, &report(0.5, "")),
            Some((
                Transition::Degraded,
                json!({"error_rate": 0.5, "sample_error": "e"})
            ))
        );
        assert_eq!(evaluate(S::Online, &report(0.49, "")), None);
        assert_eq!(
            evaluate(S::Degraded, &report(0.09, "")),
            Some((Transition::Recovered, json!({})))
        );
        assert_eq!(evaluate(S::Degraded, &report(0.1, "")), None);
        assert_eq!(evaluate(S::Degraded, &report(0.0, "wedged")), None);
        let managed = HeartbeatReport {
            status_mgmt: true,
            ..report(0.9, "")
        };
        assert_eq!(evaluate(S::Online, &managed), None);
        assert_eq!(
            evaluate(
                S::Degraded,
                &HeartbeatReport {
                    status_mgmt: true,
                    ..report(0.0, "")
                }
            ),
            None
        );
        for st in [
            S::Paused,
            S::Hibernated,
            S::Hibernating,
            S::Removed,
            S::Failed,
        ] {
            assert_eq!(evaluate(st, &report(0.0, "")), None, "{st}");
            assert_eq!(evaluate(st, &report(0.9, "wedged")), None, "{st}");
        }
    }

    #[test]
    fn spend_is_clamped() {
        assert_eq!(clamp_monthly_spend(-5), None);
        assert_eq!(clamp_monthly_spend(0), None);
        assert_eq!(clamp_monthly_spend(42), Some(42));
        assert_eq!(clamp_monthly_spend(i64::MAX), Some(MONTHLY_SPEND_MAX));
    }
}

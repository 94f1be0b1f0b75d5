//! Runtimes: the built-in allow-list and the single "external-like" predicate.
//!
//! DECISIONS.md §2.11: one predicate decides "external-like" (`external`, `kimi`, `kimi-cli`); the
//! store uses the same list (`EXTERNAL_LIKE_RUNTIMES`) when it builds SQL filters.

/// Runtimes berth knows without any template: the reference's fallback registry list.
pub const KNOWN_RUNTIMES: &[&str] = &[
    "claude-code",
    "hermes",
    "openclaw",
    "codex",
    "external",
    "kimi",
    "kimi-cli",
    "mock",
];

/// Runtimes whose agent runs on the user's own compute: no container is ever provisioned.
pub const EXTERNAL_LIKE_RUNTIMES: &[&str] = &["external", "kimi", "kimi-cli"];

/// The runtime a workspace gets when neither a runtime nor a template names one.
pub const DEFAULT_RUNTIME: &str = "claude-code";

/// The runtime an external workspace gets when the request names none.
pub const DEFAULT_EXTERNAL_RUNTIME: &str = "external";

/// Whether `runtime` is one of the external-like runtimes (exact, case-sensitive).
pub fn is_external_like(runtime: &str) -> bool {
    EXTERNAL_LIKE_RUNTIMES.contains(&runtime)
}

/// `normalizeExternalRuntime`: an empty label becomes `external`; any other label is preserved.
pub fn normalize_external_runtime(runtime: &str) -> &str {
    if runtime.is_empty() {
        DEFAULT_EXTERNAL_RUNTIME
    } else {
        runtime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_like_is_exactly_three_labels() {
        for r in ["external", "kimi", "kimi-cli"] {
            assert!(is_external_like(r));
        }
        for r in ["", "External", "mock", "claude-code", "kimi-cli2"] {
            assert!(!is_external_like(r), "{r}");
        }
        assert_eq!(normalize_external_runtime(""), "external");
        assert_eq!(normalize_external_runtime("kimi"), "kimi");
    }
}

//! Every route of the router, as `(method, path template)`. A test compares the list with the
//! committed OpenAPI document (`openapi.json`, which berth-http's suite keeps equal to the
//! router's routes), so the list cannot drift from the router.

/// The routes of `berth_http::router`, sorted by path then method.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/admin/a2a-queue/drop-stale"),
    ("GET", "/admin/liveness"),
    ("GET", "/admin/pools"),
    ("GET", "/admin/secrets"),
    ("POST", "/admin/secrets"),
    ("PUT", "/admin/secrets"),
    ("DELETE", "/admin/secrets/rotate"),
    ("POST", "/admin/secrets/rotate"),
    ("DELETE", "/admin/secrets/{key}"),
    ("POST", "/admin/workspaces/{id}/bootstrap-failed"),
    ("GET", "/admin/workspaces/{id}/test-token"),
    ("POST", "/admin/workspaces/{id}/tokens"),
    ("GET", "/"),
    ("GET", "/buildinfo"),
    ("GET", "/bundles/export/{id}"),
    ("POST", "/bundles/import"),
    ("GET", "/canvas/viewport"),
    ("PUT", "/canvas/viewport"),
    ("GET", "/console"),
    ("GET", "/console/assets/{hash}/{file}"),
    ("DELETE", "/console/session"),
    ("GET", "/console/session"),
    ("POST", "/console/session"),
    ("GET", "/events"),
    ("GET", "/events/{workspace_id}"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/registry/check-access"),
    ("GET", "/registry/discover/{id}"),
    ("POST", "/registry/heartbeat"),
    ("POST", "/registry/register"),
    ("POST", "/registry/update-card"),
    ("GET", "/registry/{id}/peers"),
    ("GET", "/settings/secrets"),
    ("POST", "/settings/secrets"),
    ("PUT", "/settings/secrets"),
    ("DELETE", "/settings/secrets/{key}"),
    ("GET", "/templates"),
    ("POST", "/templates/import"),
    ("GET", "/workspaces"),
    ("POST", "/workspaces"),
    ("DELETE", "/workspaces/{id}"),
    ("GET", "/workspaces/{id}"),
    ("PATCH", "/workspaces/{id}"),
    ("POST", "/workspaces/{id}/a2a"),
    ("GET", "/workspaces/{id}/a2a/queue"),
    ("GET", "/workspaces/{id}/a2a/queue/{queue_id}"),
    ("PATCH", "/workspaces/{id}/abilities"),
    ("GET", "/workspaces/{id}/activity"),
    ("POST", "/workspaces/{id}/activity"),
    ("POST", "/workspaces/{id}/broadcast"),
    ("GET", "/workspaces/{id}/budget"),
    ("PATCH", "/workspaces/{id}/budget"),
    ("GET", "/workspaces/{id}/config"),
    ("PATCH", "/workspaces/{id}/config"),
    ("GET", "/workspaces/{id}/console"),
    ("GET", "/workspaces/{id}/display"),
    ("GET", "/workspaces/{id}/events/stream"),
    ("POST", "/workspaces/{id}/exec"),
    ("GET", "/workspaces/{id}/external/connection"),
    ("POST", "/workspaces/{id}/external/rotate"),
    ("GET", "/workspaces/{id}/files"),
    ("PUT", "/workspaces/{id}/files"),
    ("DELETE", "/workspaces/{id}/files/{path}"),
    ("GET", "/workspaces/{id}/files/{path}"),
    ("PUT", "/workspaces/{id}/files/{path}"),
    ("POST", "/workspaces/{id}/hibernate"),
    ("GET", "/workspaces/{id}/model"),
    ("PUT", "/workspaces/{id}/model"),
    ("POST", "/workspaces/{id}/notify"),
    ("POST", "/workspaces/{id}/pause"),
    ("GET", "/workspaces/{id}/provider"),
    ("PUT", "/workspaces/{id}/provider"),
    ("POST", "/workspaces/{id}/restart"),
    ("POST", "/workspaces/{id}/resume"),
    ("GET", "/workspaces/{id}/secrets"),
    ("POST", "/workspaces/{id}/secrets"),
    ("PUT", "/workspaces/{id}/secrets"),
    ("DELETE", "/workspaces/{id}/secrets/values"),
    ("GET", "/workspaces/{id}/secrets/values"),
    ("DELETE", "/workspaces/{id}/secrets/{key}"),
    ("GET", "/workspaces/{id}/session-search"),
    ("GET", "/workspaces/{id}/state"),
    ("GET", "/workspaces/{id}/terminal"),
    ("GET", "/workspaces/{id}/terminal/diagnose"),
    ("GET", "/workspaces/{id}/tokens"),
    ("POST", "/workspaces/{id}/tokens"),
    ("DELETE", "/workspaces/{id}/tokens/{token_id}"),
    ("POST", "/workspaces/{id}/wake"),
    ("GET", "/ws"),
];

/// Routes whose contract allows a 5xx, with the statuses and why (README, API table and
/// differences): the fuzz pass does not count these as violations.
pub const ALLOWED_5XX: &[(&str, &str, &[u16], &str)] = &[
    (
        "GET",
        "/workspaces/{id}/console",
        &[501, 502],
        "the console needs the control plane: 501 without it, 502 on its errors",
    ),
    (
        "POST",
        "/workspaces/{id}/a2a",
        &[502, 503, 504],
        "the A2A proxy: 502 when the agent fails or is unreachable, 503 (Retry-After) while it \
         wakes or restarts, 504 when it does not answer in time",
    ),
    (
        "POST",
        "/workspaces/{id}/wake",
        &[503],
        "waking needs a backend: 503 without one",
    ),
    (
        "POST",
        "/workspaces/{id}/resume",
        &[503],
        "resuming a hibernated workspace wakes it: 503 without a backend",
    ),
    (
        "GET",
        "/health",
        &[503],
        "503 while the database does not answer",
    ),
    (
        "GET",
        "/workspaces/{id}/files",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "PUT",
        "/workspaces/{id}/files",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "GET",
        "/workspaces/{id}/files/{path}",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "PUT",
        "/workspaces/{id}/files/{path}",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "DELETE",
        "/workspaces/{id}/files/{path}",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "POST",
        "/workspaces/{id}/exec",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
    (
        "GET",
        "/workspaces/{id}/terminal",
        &[501, 502],
        "inside a workspace: 501 from a backend without a way in (none, the control plane), 502 \
         when the backend itself fails",
    ),
];

/// Whether `status` from `method template` is allowed by the contract (`HEAD` is served by the
/// `GET` route).
pub fn allowed_5xx(method: &str, template: &str, status: u16) -> bool {
    let method = if method == "HEAD" { "GET" } else { method };
    ALLOWED_5XX
        .iter()
        .any(|(m, t, codes, _)| *m == method && *t == template && codes.contains(&status))
}

/// Whether the route answers with a stream that never ends (only its status is read).
pub fn is_stream(template: &str) -> bool {
    matches!(template, "/workspaces/{id}/events/stream" | "/ws")
}

/// The `(METHOD, path)` operations of an OpenAPI document.
#[cfg(test)]
fn documented_routes(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_matches_the_router() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read openapi.json"))
                .expect("openapi.json is JSON");
        let mut found = documented_routes(&doc);
        found.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        let mut listed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        listed.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        assert_eq!(
            listed, found,
            "xtask/chaos/src/routes.rs ROUTES differs from the router (openapi.json); update the list"
        );
    }

    #[test]
    fn every_allowlisted_route_exists() {
        for (m, t, _, _) in ALLOWED_5XX {
            assert!(ROUTES.contains(&(*m, *t)), "{m} {t}");
        }
    }
}

//! The OpenAPI 3.1 document of the API, generated from the code: each handler's
//! `#[utoipa::path]` annotation and the wire types of `berth-api`. Every route is registered
//! through `utoipa_axum`'s `routes!`, which adds the handler to the axum router and its
//! operation to the document from the same entry, so a route cannot exist undocumented (the
//! integration suite checks both directions, and validates every response it receives against
//! this document).
//!
//! What every operation has in common is added here, once, from what the annotation declares,
//! instead of being repeated on 70 handlers: the guard's refusals (401 for `admin` and
//! `workspace` security; 400 bad id and 404 removed workspace for `workspace`), the refusals of
//! the global layers (403 refused CORS origin, 429 rate limit with `Retry-After`, 413 and 400 for
//! routes with a body, 500), and the rate-limit headers on every response.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

/// The document's fixed parts; the paths come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "berth",
        description = "berth's HTTP API: a workspace server for AI agents.\n\nSecurity: `admin` is the \
admin bearer (configured, or generated on first start); `workspace` is a live token of the \
workspace named in the path (the admin bearer is accepted there too). Routes with no scheme are \
open or check the credential themselves (described per route). With `--dev` (loopback only) the \
admin routes and the workspace routes accept requests without a bearer, and `--dev`-only routes \
exist.\n\nCORS: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is \
answered 204 by the CORS layer for any path (403 for an origin not in `--cors-origins`).\n\nRate \
limiting (`--rate-limit`): every response carries `X-RateLimit-*`; past the limit, 429 with \
`Retry-After`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(berth_api::ErrorBody))
)]
struct ApiDoc;

/// Builds the empty document the routes are added to.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

fn error_ref() -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

fn add_response(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses.entry(status).or_insert_with(|| {
        let mut r = error_ref();
        r["description"] = description.into();
        r
    });
}

/// Adds what every operation has in common (see the module doc) to the generated document.
pub(crate) fn conventions(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "admin": {"type": "http", "scheme": "bearer", "description": "The admin credential. Without it: 401, unless the server runs with `--dev`."},
        "workspace": {"type": "http", "scheme": "bearer", "description": "A live token of the workspace in the path (`POST /workspaces/{id}/tokens`, or the one handed to its agent); the admin bearer is accepted too. Without a bearer: 401, unless `--dev`."},
    });
    doc["components"]["headers"] = json!({
        "X-RateLimit-Limit": {"description": "Requests allowed per window (only with `--rate-limit`).", "schema": {"type": "integer"}},
        "X-RateLimit-Remaining": {"description": "Requests left in this window (only with `--rate-limit`).", "schema": {"type": "integer"}},
        "X-RateLimit-Reset": {"description": "Seconds until the window resets (only with `--rate-limit`).", "schema": {"type": "integer"}},
    });
    let rate_headers = json!({
        "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
        "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
        "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
    });
    unique_operation_ids(doc);
    // axum's catch-all `{*path}` is OpenAPI's plain `{path}` (which may hold slashes here).
    if let Some(paths) = doc["paths"].as_object_mut() {
        let wild: Vec<String> = paths.keys().filter(|k| k.contains("{*")).cloned().collect();
        for key in wild {
            if let Some(item) = paths.remove(&key) {
                paths.insert(key.replace("{*", "{"), item);
            }
        }
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let has_path_params = path.contains('{');
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let schemes: Vec<String> = op
                .get("security")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|r| r.keys().cloned())
                .collect();
            let has_body = op.contains_key("requestBody");
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses is an object");
            if !schemes.is_empty() {
                add_response(
                    responses,
                    "401",
                    "No accepted credential (`admin auth required`, `invalid admin auth token`, `missing workspace auth token`, `invalid workspace auth token`).",
                );
            }
            if schemes.iter().any(|s| s == "workspace") {
                add_response(responses, "400", "The path's workspace id is not a UUID.");
                add_response(
                    responses,
                    "404",
                    "`workspace not found`: no such workspace, or it was removed.",
                );
            }
            if has_body {
                add_response(
                    responses,
                    "400",
                    "The body does not bind, or holds a NUL character (`field` names it).",
                );
                add_response(responses, "413", "`request body too large`.");
            }
            if has_path_params {
                add_response(responses, "400", "A path parameter does not parse.");
            }
            add_response(
                responses,
                "403",
                "`origin not allowed`: a cross-origin request from an origin not in `--cors-origins`.",
            );
            let mut too_many = error_ref();
            too_many["description"] = "`rate limit exceeded` (only with `--rate-limit`).".into();
            too_many["headers"] = json!({"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}});
            responses.entry("429").or_insert(too_many);
            add_response(
                responses,
                "500",
                "An internal failure (the cause is logged, never sent).",
            );
            for (_, response) in responses.iter_mut() {
                let headers = response
                    .as_object_mut()
                    .expect("response is an object")
                    .entry("headers")
                    .or_insert_with(|| json!({}));
                if let (Some(h), Some(rate)) = (headers.as_object_mut(), rate_headers.as_object()) {
                    for (k, v) in rate {
                        h.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }
    canonical(doc);
}

/// Handlers in different modules share names (`list`, `rotate`, …) and one handler may serve
/// two methods: an operation id used more than once is prefixed with its tag, then suffixed with
/// its method if still shared, so each is unique as OpenAPI requires.
fn unique_operation_ids(doc: &mut Value) {
    for qualify in [
        (|tag: &str, _: &str, id: &str| format!("{tag}_{id}")) as fn(&str, &str, &str) -> String,
        |_, method, id| format!("{id}_{method}"),
    ] {
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for_each_operation(doc, |_, op| {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        });
        for_each_operation(doc, |method, op| {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                return;
            };
            if counts.get(id).copied().unwrap_or(0) > 1 {
                let tag = op
                    .get("tags")
                    .and_then(|t| t.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or("op");
                let unique = qualify(tag, method, id);
                op.insert("operationId".into(), unique.into());
            }
        });
    }
}

fn for_each_operation(doc: &mut Value, mut f: impl FnMut(&str, &mut Map<String, Value>)) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if let Some(op) = op.as_object_mut() {
                f(method, op);
            }
        }
    }
}

/// Sorts every object's keys, so the text is the same whichever way `serde_json` is built
/// (with `preserve_order`, which some dependency may turn on, maps keep insertion order).
fn canonical(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut v) in entries {
                canonical(&mut v);
                map.insert(k, v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonical),
        _ => {}
    }
}

/// The document as pretty JSON (what `GET /openapi.json` serves and `cargo xtask openapi`
/// writes), built once.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = crate::openapi();
        let mut text = serde_json::to_string_pretty(&doc).expect("the document serialises");
        text.push('\n');
        text
    })
}

/// `GET /openapi.json`: this document (open: it describes the API and reveals nothing).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
pub(crate) async fn serve_document() -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

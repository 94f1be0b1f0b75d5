//! The OpenAPI document cannot drift from the router:
//!
//! - every response this suite receives goes through [`checked`], a layer that looks up the
//!   operation (the route's `MatchedPath` and the method) and the status in the document and
//!   validates a JSON body against its schema, with every object schema closed (an undocumented
//!   field fails), so an undocumented route, status, field or shape fails the test that met it;
//! - the document's operations are exactly the router's: each documented (path, method) is
//!   routed (it reaches a handler, not the fallbacks), each undocumented method of a documented
//!   path is not, and no route is registered except through `utoipa_axum::routes!` (the sources
//!   hold no `.route(`), which documents what it routes;
//! - the committed `openapi.json` is the generated one, and `GET /openapi.json` serves it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, app, send};

/// The document as the server generates it.
static DOC: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(berth_http::openapi_json()).expect("the document is JSON")
});

/// The document with every object schema closed: a schema listing `properties` without saying
/// anything about others gets `additionalProperties: false`. (The types themselves accept
/// unknown fields, so that an older client keeps reading a newer server; the suite does not.)
static STRICT: LazyLock<Value> = LazyLock::new(|| {
    let mut doc = DOC.clone();
    close_objects(&mut doc);
    doc
});

fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

type Key = (String, String, String);

/// Compiled validators by (path template, method, status).
static VALIDATORS: LazyLock<Mutex<HashMap<Key, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Mutex::default);

fn validator(key: &Key, schema: &Value) -> Arc<jsonschema::Validator> {
    let mut cache = VALIDATORS.lock().expect("validators");
    cache
        .entry(key.clone())
        .or_insert_with(|| {
            // `$ref`s point into the document's components: carry them along at the root.
            let mut root = schema.clone();
            if let Value::Object(map) = &mut root {
                map.insert("components".into(), STRICT["components"].clone());
            } else {
                root = json!({"allOf": [schema], "components": STRICT["components"]});
            }
            Arc::new(
                jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("schema of {key:?} does not compile: {e}")),
            )
        })
        .clone()
}

/// Wraps `router` so every response it gives is checked against the document.
pub fn checked(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(check))
}

async fn check(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        // axum's catch-all `{*path}` is the document's `{path}`.
        .map(|p| p.as_str().replace("{*", "{"));
    let uri = req.uri().clone();
    // The request body is kept to check it against the documented request schema when the
    // server accepted it (a 2xx).
    let (req_parts, req_body) = req.into_parts();
    let req_bytes = axum::body::to_bytes(req_body, usize::MAX)
        .await
        .unwrap_or_default();
    let req = Request::from_parts(req_parts, Body::from(req_bytes.clone()));
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success()
        && let Err(problem) = accepted_request(&method, route.as_deref(), &req_bytes)
    {
        panic!(
            "OpenAPI: {method} {uri} (route {route:?}) was accepted ({status}) with a body the document does not describe: {problem}\nbody: {}",
            String::from_utf8_lossy(&req_bytes)
        );
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Streams are never read to their end here: only their status is checked.
    let streaming =
        content_type.starts_with("text/event-stream") || status == StatusCode::SWITCHING_PROTOCOLS;
    let (parts, body) = resp.into_parts();
    if streaming {
        if let Err(problem) = conforms(&method, route.as_deref(), status, &content_type, None) {
            panic!("OpenAPI: {method} {uri} (route {route:?}) answered {status}: {problem}");
        }
        return Response::from_parts(parts, body);
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("read the response body");
    if let Err(problem) = conforms(
        &method,
        route.as_deref(),
        status,
        &content_type,
        Some(&bytes),
    ) {
        panic!(
            "OpenAPI: {method} {uri} (route {route:?}) answered {status} that the document does not describe: {problem}\nbody: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether a request body the server accepted fits the documented request schema (open: the
/// server ignores unknown fields, as the reference does; only the fields it reads are checked).
fn accepted_request(method: &Method, route: Option<&str>, body: &[u8]) -> Result<(), String> {
    let Some(operation) = route
        .and_then(|r| DOC["paths"].get(r))
        .and_then(|item| item.get(method.as_str().to_lowercase()))
    else {
        return Ok(());
    };
    let Some(schema) = operation
        .get("requestBody")
        .and_then(|b| b["content"].get("application/json"))
        .and_then(|c| c.get("schema"))
    else {
        return Ok(());
    };
    let Ok(instance) = serde_json::from_slice::<Value>(body) else {
        // Empty or not JSON: the routes that take an optional body say so in their handlers.
        return Ok(());
    };
    let key = (
        route.unwrap_or_default().to_owned(),
        method.as_str().to_lowercase(),
        "request".to_owned(),
    );
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert("components".into(), DOC["components"].clone());
    }
    let v = {
        let mut cache = VALIDATORS.lock().expect("validators");
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .build(&root)
                        .unwrap_or_else(|e| panic!("schema of {key:?} does not compile: {e}")),
                )
            })
            .clone()
    };
    let errors: Vec<String> = v
        .iter_errors(&instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Whether a response conforms to the document.
fn conforms(
    method: &Method,
    route: Option<&str>,
    status: StatusCode,
    content_type: &str,
    body: Option<&[u8]>,
) -> Result<(), String> {
    // A CORS preflight is answered by the CORS layer on any path (the document says so).
    if method == Method::OPTIONS {
        return Ok(());
    }
    let doc_method = if method == Method::HEAD {
        "get".to_owned()
    } else {
        method.as_str().to_lowercase()
    };
    let operation = route
        .and_then(|r| DOC["paths"].get(r))
        .and_then(|item| item.get(&doc_method));
    let Some(operation) = operation else {
        // Not routed: the fallbacks (404 unknown path, 405 method), or a global layer's refusal.
        let expected: &[u16] = if route.is_some() {
            &[405, 403, 429]
        } else {
            &[404, 403, 429]
        };
        if !expected.contains(&status.as_u16()) {
            return Err(format!(
                "no operation, and {status} is not a fallback status"
            ));
        }
        return check_body(
            &("(fallback)".into(), doc_method, status.as_str().into()),
            &json!({"$ref": "#/components/schemas/ErrorBody"}),
            content_type,
            body,
            method == Method::HEAD,
        );
    };
    let responses = &operation["responses"];
    let response = responses
        .get(status.as_str())
        .or_else(|| responses.get("default"))
        .ok_or_else(|| format!("status {status} is not documented"))?;
    let response = match response.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            &DOC["components"]["responses"][name]
        }
        None => response,
    };
    let key = (
        route.unwrap_or_default().to_owned(),
        doc_method,
        status.as_str().to_owned(),
    );
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return match body {
            Some(b) if !b.is_empty() => Err("a body where the document has none".into()),
            _ => Ok(()),
        };
    };
    if status == StatusCode::SWITCHING_PROTOCOLS || content_type.starts_with("text/event-stream") {
        return if content.contains_key("text/event-stream")
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            Ok(())
        } else {
            Err(format!("content type {content_type} is not documented"))
        };
    }
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == "application/json" {
        let schema = content
            .get("application/json")
            .and_then(|c| c.get("schema"))
            .ok_or_else(|| "a JSON body where the document has another content type".to_owned())?;
        let mut schema = schema.clone();
        close_objects(&mut schema);
        return check_body(&key, &schema, content_type, body, method == Method::HEAD);
    }
    if content.contains_key(media) || (media.is_empty() && body.is_none_or(<[u8]>::is_empty)) {
        return Ok(());
    }
    Err(format!(
        "content type {content_type:?} is not documented ({:?})",
        content.keys().collect::<Vec<_>>()
    ))
}

fn check_body(
    key: &Key,
    schema: &Value,
    content_type: &str,
    body: Option<&[u8]>,
    head: bool,
) -> Result<(), String> {
    let Some(body) = body else { return Ok(()) };
    if head && body.is_empty() {
        return Ok(());
    }
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "content type {content_type:?} where the document has JSON"
        ));
    }
    let instance: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let v = validator(key, schema);
    let errors: Vec<String> = v
        .iter_errors(&instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

// ---- the document and the router agree --------------------------------------------------------

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every (path template, method) of the document.
fn documented() -> BTreeSet<(String, String)> {
    DOC["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (path.clone(), (*m).to_owned()))
        })
        .collect()
}

/// A concrete URI for a template: each `{param}` becomes a fresh UUID (every path parameter of
/// the API is an id or a name, and a UUID is a valid one of each).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The route that served a request (`None`: the fallback), and its status.
async fn served(router: &Router, method: &str, uri: &str) -> (Option<String>, StatusCode) {
    let seen = Arc::new(Mutex::new(None::<String>));
    let record = seen.clone();
    let probe = router.clone().layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let record = record.clone();
            async move {
                *record.lock().expect("probe") = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().replace("{*", "{"));
                next.run(req).await
            }
        },
    ));
    let req = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let resp = send(&probe, req).await;
    let route = seen.lock().expect("probe").clone();
    (route, resp.status)
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_is() {
    let app = app().await;
    let documented = documented();
    assert!(
        documented.len() > 60,
        "the document lists {} operations",
        documented.len()
    );
    for (template, method) in &documented {
        let (route, status) = served(&app.router, method, &concrete(template)).await;
        assert_eq!(
            route.as_deref(),
            Some(template.as_str()),
            "{method} {template} is documented but not routed to that template"
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template} is documented but the router does not serve the method"
        );
    }
    // The other methods of each documented path reach the method fallback, not a handler.
    let paths: BTreeSet<&String> = documented.iter().map(|(p, _)| p).collect();
    for template in paths {
        for method in METHODS {
            if documented.contains(&(template.clone(), method.to_owned())) {
                continue;
            }
            let (_, status) = served(&app.router, method, &concrete(template)).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template} is served but not documented"
            );
        }
    }
}

/// Routes exist only through `routes!` (which documents them): no source file of berth-http
/// registers one any other way.
#[test]
fn routes_are_registered_only_with_their_documentation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("berth-http sources") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for needle in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            "Router::new()",
            "axum::routing::",
        ] {
            for (i, line) in text.lines().enumerate() {
                let code = !line.trim_start().starts_with("//");
                if code && line.contains(needle) && !line.contains("OpenApiRouter::new()") {
                    offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "register routes with `.routes(routes!(handler))` so they are documented:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json");
    let committed = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        committed == berth_http::openapi_json(),
        "openapi.json is not the generated document: run `cargo xtask openapi`"
    );
}

#[tokio::test]
async fn the_document_is_served_openly_and_is_openapi_3_1() {
    let app = app().await;
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .expect("request");
    let resp = app.send(req).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text, berth_http::openapi_json());
    assert!(
        resp.json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let schemes = &resp.json["components"]["securitySchemes"];
    assert_eq!(schemes["admin"]["scheme"], "bearer");
    assert_eq!(schemes["workspace"]["scheme"], "bearer");
}

/// The checker itself: it refuses an undocumented field, an undocumented status and an
/// undocumented shape, and accepts what the document says.
#[test]
fn the_checker_refuses_what_the_document_does_not_say() {
    let check = |method: Method, route: Option<&str>, status: StatusCode, body: Value| {
        let body = body.to_string();
        conforms(
            &method,
            route,
            status,
            "application/json",
            Some(body.as_bytes()),
        )
    };
    let health = Some("/health");
    let ok = json!({"status": "ok"});
    // What the document says is accepted, on a route and in the router's fallback.
    assert_eq!(
        check(Method::GET, health, StatusCode::OK, ok.clone()),
        Ok(())
    );
    assert_eq!(
        check(
            Method::GET,
            None,
            StatusCode::NOT_FOUND,
            json!({"error": "not found"})
        ),
        Ok(())
    );
    let refused = [
        // An undocumented field.
        (
            Method::GET,
            health,
            StatusCode::OK,
            json!({"status": "ok", "extra": 1}),
        ),
        // An undocumented shape.
        (Method::GET, health, StatusCode::OK, json!({"status": 1})),
        // An undocumented status.
        (Method::GET, health, StatusCode::IM_A_TEAPOT, ok.clone()),
        // An undocumented method.
        (Method::POST, health, StatusCode::OK, ok),
        // An error body with an undocumented field.
        (
            Method::GET,
            Some("/workspaces/{id}"),
            StatusCode::NOT_FOUND,
            json!({"error": "x", "secret_detail": "y"}),
        ),
    ];
    for (method, route, status, body) in refused {
        let what = format!("{method} {route:?} {status} {body}");
        assert!(
            check(method, route, status, body).is_err(),
            "accepted: {what}"
        );
    }
}

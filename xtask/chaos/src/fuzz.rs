//! Scenario 3: a seeded fuzz pass over every route of the router (`routes.rs`), with the admin
//! token, a workspace token, none, or a wrong one; random and boundary ids in the paths, random
//! query strings, and bodies of random JSON (huge numbers, NULs, deep nesting, wrong types, long
//! strings) or no JSON at all.
//!
//! Requests go one at a time, so each answer can be judged alone. Asserts: no 5xx outside
//! `routes::ALLOWED_5XX`, every request answered, no panic in the server log, and no change in
//! any table (row count and checksum, `snapshot.rs`) after a request that was refused (4xx).
//! The same seed replays the same requests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::Opts;
use crate::report::Report;
use crate::rng::Rng;
use crate::routes::{ROUTES, allowed_5xx, is_stream};
use crate::server::{Berth, Store, data_dir, store_flags};
use crate::snapshot::{Db, diff};

/// Field names the routes read, mixed into random objects so that bodies get past the first
/// checks.
const FIELDS: &[&str] = &[
    "name",
    "role",
    "template",
    "runtime",
    "tier",
    "model",
    "provider",
    "url",
    "external",
    "parent_id",
    "secrets",
    "config",
    "key",
    "value",
    "values",
    "activity_type",
    "summary",
    "method",
    "target_id",
    "source_id",
    "status",
    "error_detail",
    "duration_ms",
    "request_body",
    "response_body",
    "metadata",
    "message",
    "content",
    "sample_error",
    "current_task",
    "active_tasks",
    "agent_card",
    "workspace_id",
    "id",
    "token",
    "caller_id",
    "target_id",
    "x",
    "y",
    "zoom",
    "budget",
    "budget_limit",
    "limit",
    "abilities",
    "files",
    "workspaces",
    "delivery_mode",
    "compute",
    "initial_memories",
    "max_age_minutes",
    "jsonrpc",
    "params",
    "label",
    "error",
    "uptime_seconds",
    "error_rate",
    "monthly_spend",
    "workspace",
];

/// Query parameter names the routes read.
const QUERY_KEYS: &[&str] = &[
    "limit",
    "since_id",
    "since_secs",
    "type",
    "q",
    "include",
    "token",
    "max_age_minutes",
    "cursor",
    "force",
    "workspace_id",
    "since",
    "offset",
    "confirm",
    "source",
    "peer_id",
];

/// Boundary strings for ids, keys and query values (already percent-encoded where needed).
const ODD_SEGMENTS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    "0",
    "-1",
    "18446744073709551616",
    "9223372036854775807",
    "140000000000",
    "%00",
    "a%00b",
    "..",
    "%2e%2e",
    "%F0%9F%92%A9",
    "%20",
    "values",
    "rotate",
    "null",
    "true",
    "1e308",
    "NaN",
    "%FF%FE",
    "x%0Ay",
];

/// Raw bodies that are not well-formed requests.
const RAW_BODIES: &[&str] = &[
    "",
    "null",
    "[]",
    "{}",
    "\"text\"",
    "123",
    "{",
    "{\"name\":",
    "\u{0}",
    "{\"name\":\"a\u{0}b\"}",
    "{\"max_age_minutes\": 1e400}",
    "{\"limit\": -9223372036854775809}",
    "{\"budget_limit\": 99999999999999999999999999}",
    "{\"duration_ms\": 1.5e300}",
    "{\"name\": \"x\", \"name\": \"y\"}",
    "\u{feff}{}",
    "{\"a\":\"\\ud800\"}",
];

/// Runs the scenario on `store`.
pub async fn run(opts: &Opts, store: Store, report: &mut Report) -> Result<()> {
    let what = format!("fuzz/{}", store.name());
    let count = opts.pick(2_000, 20_000);
    let seed = opts.seed ^ if store == Store::Sqlite { 0 } else { 0x5EED };
    let data = data_dir(opts, &format!("fuzz-{}", store.name()))?;
    // No backend and no sweeps to speak of: nothing but the requests writes to the database.
    let mut flags: Vec<String> = ["--provisioner", "none", "--sweep-interval-secs", "3600"]
        .map(String::from)
        .to_vec();
    flags.extend(store_flags(opts, store, "chaos_fuzz").await?);
    let mut berth = Berth::start(opts, &data, 1, &flags).await?;
    let mut db = match store {
        Store::Sqlite => Db::sqlite(&data.join("berth.db")).await?,
        Store::Postgres => Db::postgres(&flags[flags.len() - 1]).await?,
    };
    // Short answers: every route answers within seconds or is a stream. A fresh connection per
    // request: the server closes a connection whose request body it did not read, and a pooled
    // client can pick that connection up just as it closes (a client-side race, not a fault).
    berth.http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;

    let mut rng = Rng::new(seed);
    let mut pool: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    let limit = Duration::from_secs(opts.pick(600, 3600));
    let mut before = db.snapshot().await?;
    let (mut sent, mut refused, mut cut_early) = (0u64, 0u64, 0u64);
    // (method, template, status) → count, for the 5xx of the summary.
    let mut server_errors: BTreeMap<(String, &str, u16), u64> = BTreeMap::new();
    for i in 0..count {
        if started.elapsed() > limit {
            report.violation(&what, format!("time limit reached after {i} requests"));
            break;
        }
        // Fresh workspaces now and then: fuzzed deletes and token rotations use them up.
        if i % 250 == 0 {
            pool.push(berth.create_external(&format!("fuzz-{i}")).await?);
            sent += 1;
            before = db.snapshot().await?;
        }
        let req = generate(&mut rng, &pool, &berth.admin);
        sent += 1;
        let status = send(&berth, &req).await;
        let after = db.snapshot().await?;
        let path = short(&req.path);
        match status {
            // A request refused before its body was read (413 over the limit, or a bad path or
            // credential) is answered and the connection closed while a large body is still
            // being sent: the client sees a send error, not the answer. Counted, not a violation,
            // as long as the server still answers; a panic shows in the log scan.
            Err(_)
                if req
                    .body
                    .as_ref()
                    .is_some_and(|b| b.len() >= EARLY_ANSWER_BODY)
                    && alive(&berth).await =>
            {
                cut_early += 1;
            }
            Err(err) => report.violation(
                &what,
                format!(
                    "#{i} {} {path}: no answer: {}{}",
                    req.method,
                    chain(err.as_ref()),
                    req.describe()
                ),
            ),
            Ok(code) if code >= 500 => {
                *server_errors
                    .entry((req.method.to_string(), req.template, code))
                    .or_default() += 1;
                if !allowed_5xx(req.method.as_str(), req.template, code) {
                    report.violation(
                        &what,
                        format!(
                            "#{i} {} {path} answered {code}{}",
                            req.method,
                            req.describe()
                        ),
                    );
                }
            }
            Ok(code) if code >= 400 => {
                refused += 1;
                let changed = diff(&before, &after);
                if !changed.is_empty() {
                    report.violation(
                        &what,
                        format!(
                            "#{i} {} {path} was refused with {code} yet changed {}{}",
                            req.method,
                            changed.join(", "),
                            req.describe()
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
        before = after;
        if berth.exited() {
            report.violation(
                &what,
                format!("the server exited after #{i}:\n{}", berth.log_tail()),
            );
            break;
        }
    }
    berth.stop();
    for panic in berth.panics() {
        report.violation(&what, format!("panic in the server log: {panic}"));
    }
    report.requests += sent;
    let fives: Vec<String> = server_errors
        .iter()
        .map(|((m, t, c), n)| format!("{n}× {c} {m} {t}"))
        .collect();
    report.note(format!(
        "{what}: {sent} requests (seed {seed}), {refused} refused (4xx, table snapshot compared), {cut_early} large bodies cut off by an early answer, 5xx: [{}], {:.0} s",
        fives.join(", "),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Bodies at least this large may be cut off by an early answer (see `run`).
const EARLY_ANSWER_BODY: usize = 16 * 1024;

/// An error with its sources, one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Whether the server answers `/health`.
async fn alive(berth: &Berth) -> bool {
    berth
        .http
        .get(format!("{}/health", berth.base))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// `path` cut to 160 characters for a report line.
fn short(path: &str) -> String {
    if path.len() <= 160 {
        return path.to_owned();
    }
    let mut end = 160;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &path[..end], path.len())
}

/// One generated request.
struct Request {
    method: Method,
    /// The route template it came from (`?` for a random path).
    template: &'static str,
    path: String,
    bearer: Option<String>,
    /// What `bearer` is, for the report.
    credential: &'static str,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A short description of the body and credential, for a violation.
    fn describe(&self) -> String {
        let body = self.body.as_deref().map_or(String::from("none"), |b| {
            let text = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
            format!("{} bytes: {text:?}", b.len())
        });
        format!(
            " [template {}, credential {}, body {body}]",
            self.template, self.credential
        )
    }
}

/// Sends `req` and returns its status; a stream's body is not read.
async fn send(berth: &Berth, req: &Request) -> Result<u16> {
    let mut builder = berth
        .http
        .request(req.method.clone(), format!("{}{}", berth.base, req.path));
    if let Some(token) = &req.bearer {
        builder = builder.bearer_auth(token);
    }
    if let Some(ct) = req.content_type {
        builder = builder.header("content-type", ct);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let resp = builder.send().await?;
    let status = resp.status().as_u16();
    if !is_stream(req.template) || status != 200 {
        // Bounded by the client's timeout.
        let _ = resp.bytes().await?;
    }
    Ok(status)
}

/// Draws one request.
fn generate(rng: &mut Rng, pool: &[(String, String)], admin: &str) -> Request {
    let (method, template) = *rng.pick(ROUTES);
    let mut method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    if rng.chance(8) {
        method = rng
            .pick(&[
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::HEAD,
                Method::OPTIONS,
            ])
            .clone();
    }
    let (template, mut path) = if rng.chance(3) {
        (
            "?",
            format!("/{}/{}", segment(rng, pool), segment(rng, pool)),
        )
    } else {
        let mut path = String::new();
        for part in template.split('/').skip(1) {
            path.push('/');
            if part.starts_with('{') {
                path.push_str(&segment(rng, pool));
            } else {
                path.push_str(part);
            }
        }
        (template, path)
    };
    if rng.chance(35) {
        let n = 1 + rng.below(3);
        for k in 0..n {
            path.push(if k == 0 { '?' } else { '&' });
            path.push_str(rng.pick::<&str>(QUERY_KEYS));
            path.push('=');
            let value = segment(rng, pool);
            path.push_str(&value);
        }
    }
    let own = pool.get(rng.below(pool.len().max(1)));
    let (bearer, credential) = match rng.below(10) {
        0..=3 => (Some(admin.to_owned()), "admin"),
        4..=6 => (own.map(|(_, token)| token.clone()), "a workspace token"),
        7 => (None, "none"),
        8 => (Some(format!("{admin}x")), "admin token plus one character"),
        _ => (Some("not-a-token".to_owned()), "garbage"),
    };
    let wants_body = matches!(method, Method::POST | Method::PUT | Method::PATCH) || rng.chance(5);
    let body = wants_body.then(|| body(rng, pool));
    let content_type = match rng.below(12) {
        0 => None,
        1 => Some("text/plain"),
        _ => Some("application/json"),
    };
    Request {
        method,
        template,
        path,
        bearer,
        credential,
        content_type,
        body,
    }
}

/// A path segment or query value: a known id half the time, else a boundary value.
fn segment(rng: &mut Rng, pool: &[(String, String)]) -> String {
    match rng.below(10) {
        0..=4 if !pool.is_empty() => pool[rng.below(pool.len())].0.clone(),
        5 => uuid::Uuid::from_u128(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
            .to_string(),
        6 => "a".repeat(1 + rng.below(5000)),
        _ => (*rng.pick(ODD_SEGMENTS)).to_owned(),
    }
}

/// A request body.
fn body(rng: &mut Rng, pool: &[(String, String)]) -> Vec<u8> {
    match rng.below(20) {
        0 => (*rng.pick(RAW_BODIES)).as_bytes().to_vec(),
        1 => {
            // Nesting past serde_json's recursion limit (128), and just under it.
            let depth = *rng.pick(&[64usize, 127, 128, 129, 1000, 20_000]);
            let (open, close) = if rng.chance(50) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let mut s = open.repeat(depth);
            s.push('1');
            s.push_str(&close.repeat(depth));
            s.into_bytes()
        }
        2 => {
            // Over the 1 MiB body limit.
            let v = json!({"name": "big", "summary": "x".repeat(1_100_000)});
            v.to_string().into_bytes()
        }
        3 => (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect(),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.below(7) {
                let key = if rng.chance(85) {
                    (*rng.pick(FIELDS)).to_owned()
                } else {
                    string(rng, pool)
                };
                map.insert(key, value(rng, pool, 0));
            }
            Value::Object(map).to_string().into_bytes()
        }
    }
}

/// A random JSON value, `depth` levels down.
fn value(rng: &mut Rng, pool: &[(String, String)], depth: usize) -> Value {
    let leaf = depth >= 4;
    match rng.below(if leaf { 6 } else { 9 }) {
        0 | 1 => Value::String(string(rng, pool)),
        2 => json!(*rng.pick(&[
            0.0,
            -1.0,
            1.5,
            1e308,
            -1e308,
            9.223_372_036_854_776e18,
            1.844_674_407_370_955_2e19,
            5e-324
        ])),
        3 => json!(*rng.pick(&[0i64, 1, -1, i64::MAX, i64::MIN, 140_000_000_000, 2_592_001])),
        4 => Value::Bool(rng.chance(50)),
        5 => Value::Null,
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| value(rng, pool, depth + 1))
                .collect(),
        ),
        7 => {
            let mut map = Map::new();
            for _ in 0..rng.below(4) {
                let key = if rng.chance(70) {
                    (*rng.pick(FIELDS)).to_owned()
                } else {
                    string(rng, pool)
                };
                map.insert(key, value(rng, pool, depth + 1));
            }
            Value::Object(map)
        }
        _ => {
            // Deep, but within what serialises: 20 to 60 levels.
            let mut v = json!(1);
            for _ in 0..20 + rng.below(40) {
                v = json!({"a": v});
            }
            v
        }
    }
}

/// A random string: short, odd, long, with NULs, or a real id.
fn string(rng: &mut Rng, pool: &[(String, String)]) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => "a\u{0}b".to_owned(),
        2 => "\u{0}".repeat(1 + rng.below(10)),
        3 => "x".repeat(*rng.pick(&[255usize, 256, 1024, 65_536, 65_537, 200_000])),
        4 => "é🦀\u{202e}\u{feff}".repeat(1 + rng.below(50)),
        5 if !pool.is_empty() => pool[rng.below(pool.len())].0.clone(),
        6 => (*rng.pick(&[
            "echo",
            "claude-code",
            "langgraph",
            "http://127.0.0.1:1/",
            "http://169.254.169.254/",
            "file:///etc/passwd",
            "../../etc/passwd",
            "a2a_send",
            "agent_log",
            "T1",
            "T4",
            "push",
            "poll",
            "online",
            "failed",
            "anthropic:claude-sonnet-4-5",
        ]))
        .to_owned(),
        _ => {
            let n = 1 + rng.below(24);
            (0..n)
                .map(|_| char::from(b' ' + (rng.next_u64() % 95) as u8))
                .collect()
        }
    }
}

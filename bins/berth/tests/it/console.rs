//! The web console in a real browser (issue #18): headless Debian Chromium, driven over
//! WebDriver (`webdriver.rs`), against the release binary started the way the README says
//! (default flags: the process backend runs the demo agent). Each test saves screenshots under
//! `target/console-screens/<test>/`, and one on any wait that times out.

use std::time::Duration;

use serde_json::json;

use crate::server::Server;
use crate::webdriver::{Browser, ENTER, TAB};

const PATIENCE: Duration = Duration::from_secs(60);
const QUICK: Duration = Duration::from_secs(15);

/// Fails on any Content-Security-Policy violation the browser reported.
async fn assert_no_csp_errors(b: &Browser) {
    let log = b.console_log().await;
    let csp: Vec<&(String, String)> = log
        .iter()
        .filter(|(_, m)| m.contains("Content Security Policy") || m.contains("Refused to"))
        .collect();
    assert!(csp.is_empty(), "CSP violations: {csp:?}");
}

/// Asserts the focus is on the element matching `css` and visibly so (`:focus-visible` with an
/// outline of at least 2 px).
async fn focused(b: &Browser, css: &str) {
    let seen = b.script(FOCUS, json!([css])).await;
    assert_eq!(seen["matches"], true, "the focus is on {css}: {seen}");
    assert_focus_visible(&seen, css);
}

/// What has the focus: whether it matches `arguments[0]`, whether it shows `:focus-visible`, its
/// outline, and a description.
const FOCUS: &str = "const el = document.activeElement;\
    if (!el) return {matches: false, what: 'nothing'};\
    const cs = getComputedStyle(el);\
    return {matches: el.matches(arguments[0]), visible: el.matches(':focus-visible'),\
            outline: cs.outlineStyle, width: parseFloat(cs.outlineWidth) || 0,\
            what: el.tagName + (el.id ? '#' + el.id : '') + ' ' + (el.textContent || '').trim().slice(0, 40)};";

fn assert_focus_visible(seen: &serde_json::Value, css: &str) {
    assert_eq!(seen["visible"], true, "{css} shows :focus-visible: {seen}");
    assert!(
        seen["outline"] != "none" && seen["width"].as_f64().unwrap_or_default() >= 2.0,
        "{css} has a visible focus outline: {seen}"
    );
}

/// Presses Tab (at most `max` times) until the focus is on the element matching `css`; every
/// element on the way shows a visible focus.
async fn tab_to(b: &Browser, css: &str, max: usize) {
    let mut path = Vec::new();
    for _ in 0..max {
        b.keys(&TAB.to_string()).await;
        let seen = b.script(FOCUS, json!([css])).await;
        path.push(seen["what"].as_str().unwrap_or_default().to_owned());
        if seen["what"] != "BODY " {
            assert_focus_visible(&seen, &path.join(" → "));
        }
        if seen["matches"] == true {
            return;
        }
    }
    b.screenshot("tab-timeout").await;
    panic!(
        "{max} presses of Tab never reached {css}: {}",
        path.join(" → ")
    );
}

async fn sign_in(b: &Browser, token: &str) {
    let input = b.wait("#token", PATIENCE).await;
    b.type_into(&input, token).await;
    let button = b.wait("#signin", QUICK).await;
    b.click(&button).await;
}

/// What a new user does first: open the console, sign in (a wrong token is refused), create the
/// demo workspace from its template and watch it come online without reloading, message it,
/// restart it and see the transitions, mint and revoke a token, set a secret whose value never
/// reaches the page, delete it with purge, sign out.
#[tokio::test]
async fn a_new_user_runs_an_agent_from_the_console() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &[]).await;
    let b = Browser::start("new-user").await;
    b.goto(&server.base).await;

    sign_in(&b, "not-the-token").await;
    b.wait_text("#signin-error", QUICK, "an error", |t| {
        t.contains("Invalid token")
    })
    .await;
    b.screenshot("refused").await;
    sign_in(&b, &server.admin_token).await;
    b.wait_text("#whoami", QUICK, "admin", |t| t.contains("admin"))
        .await;
    b.wait("#empty", QUICK).await;
    b.screenshot("empty").await;

    let create = b.wait("#create-link", QUICK).await;
    b.click(&create).await;
    let name = b.wait("#create-name", QUICK).await;
    b.type_into(&name, "demo").await;
    let echo = b
        .wait("#create-template option[value=\"echo\"]", QUICK)
        .await;
    b.click(&echo).await;
    let submit = b.wait("#create-submit", QUICK).await;
    b.click(&submit).await;
    b.wait_text("#ws-status", PATIENCE, "online", |t| t.trim() == "online")
        .await;
    b.screenshot("online").await;
    let id = b
        .script("return location.hash.split('/').pop();", json!([]))
        .await
        .as_str()
        .expect("the workspace id in the URL")
        .to_owned();

    let input = b.wait("#message-input", QUICK).await;
    b.type_into(&input, "hello").await;
    let send = b.wait("#message-send", QUICK).await;
    b.click(&send).await;
    b.wait_text("#message-reply", PATIENCE, "the echo", |t| {
        t.contains("echo: hello")
    })
    .await;

    let restart = b.wait("#action-restart", QUICK).await;
    b.click(&restart).await;
    b.wait_text("#events", PATIENCE, "a restart", |t| {
        t.matches("WORKSPACE_PROVISIONING").count() >= 1 && t.contains("WORKSPACE_ONLINE")
    })
    .await;
    b.wait_text("#ws-status", PATIENCE, "online again", |t| {
        t.trim() == "online"
    })
    .await;
    b.screenshot("restarted").await;

    let mint = b.wait("#token-mint", QUICK).await;
    b.click(&mint).await;
    let shown = b.wait("#token-new", QUICK).await;
    let token = b.property(&shown, "value").await;
    let token = token.as_str().expect("the minted token").to_owned();
    assert!(token.len() > 20, "{token}");
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/state"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "the minted token works");
    let rows = b
        .script(
            "return document.querySelectorAll('#tokens tr[data-token-id]').length;",
            json!([]),
        )
        .await;
    // Revoke the minted one (its row shows its first characters), not the agent's own.
    let clicked = b
        .script(
            "const rows = [...document.querySelectorAll('#tokens tr[data-token-id]')];\
             const row = rows.find(r => r.textContent.includes(arguments[0]));\
             if (!row) return false; row.querySelector('.revoke').click(); return true;",
            json!([&token[..6]]),
        )
        .await;
    assert_eq!(clicked, json!(true), "the minted token's row");
    let before = rows.as_u64().expect("a count");
    let deadline = std::time::Instant::now() + QUICK;
    loop {
        let now = b
            .script(
                "return document.querySelectorAll('#tokens tr[data-token-id]').length;",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(before);
        if now < before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token row stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let secret = "sk-console-never-shown-4711";
    let key = b.wait("#secret-key", QUICK).await;
    b.type_into(&key, "OPENAI_API_KEY").await;
    let value = b.wait("#secret-value", QUICK).await;
    b.type_into(&value, secret).await;
    let save = b.wait("#secret-save", QUICK).await;
    b.click(&save).await;
    b.wait("[data-secret=\"OPENAI_API_KEY\"]", PATIENCE).await;
    assert!(
        !b.dom().await.contains(secret),
        "the secret's value is not in the page"
    );
    b.screenshot("workspace").await;

    // The list, updated live: the row is there and online.
    b.goto(&server.base).await;
    b.wait_text(
        &format!("#workspaces tr[data-id=\"{id}\"] .status"),
        PATIENCE,
        "online",
        |t| t.trim() == "online",
    )
    .await;
    // The heartbeat-age chart has the agent's heartbeat (`last_heartbeat_at`).
    let page = b.body_text().await;
    assert!(!page.contains("No heartbeat times known"), "{page}");
    b.screenshot("list").await;

    b.goto(&format!("{}/#/workspaces/{id}", server.base)).await;
    let purge = b.wait("#delete-purge", QUICK).await;
    b.click(&purge).await;
    let delete = b.wait("#action-delete", QUICK).await;
    b.click(&delete).await;
    let confirm = b.wait("#delete-confirm", QUICK).await;
    b.click(&confirm).await;
    crate::server::wait_for("the purge", PATIENCE, || async {
        let (status, _) = server
            .call(
                reqwest::Method::GET,
                &format!("/workspaces/{id}"),
                None,
                None,
            )
            .await;
        if status == 404 {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    })
    .await;

    assert_no_csp_errors(&b).await;
    let out = b.wait("#signout", QUICK).await;
    b.click(&out).await;
    b.wait("#token", QUICK).await;
    // Signed out: a reload lands on the sign-in page again.
    b.goto(&server.base).await;
    b.wait("#token", QUICK).await;
}

/// A workspace token signs in to that workspace only.
#[tokio::test]
async fn a_workspace_token_sees_its_own_workspace() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &[]).await;
    let (status, created) = server
        .admin_post("/workspaces", &json!({"name": "mine", "template": "echo"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    server.wait_status(&id, "online", PATIENCE).await;
    let (status, minted) = server
        .admin_post(&format!("/admin/workspaces/{id}/tokens"), &json!({}))
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["auth_token"].as_str().expect("token").to_owned();

    let b = Browser::start("workspace-token").await;
    b.goto(&server.base).await;
    sign_in(&b, &token).await;
    b.wait_text("#whoami", QUICK, "the workspace", |t| t.contains(&id))
        .await;
    b.wait_text("#ws-name", PATIENCE, "its name", |t| t.contains("mine"))
        .await;
    b.wait_text("#ws-status", PATIENCE, "online", |t| t.trim() == "online")
        .await;
    b.screenshot("workspace-token").await;
    assert_no_csp_errors(&b).await;
}

/// The files and terminal panels in the browser, on a server whose operator allowed the process
/// backend's shell: the template's `config.yaml` is listed and opened, and a command typed into
/// the terminal (over the cookie-authenticated WebSocket) prints its output.
#[tokio::test]
async fn files_and_terminal_panels_work_in_the_browser() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &["--process-shell"]).await;
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "panels", "template": "echo"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    server.wait_status(&id, "online", PATIENCE).await;

    let b = Browser::start("panels").await;
    b.goto(&server.base).await;
    sign_in(&b, &server.admin_token).await;
    b.wait_text("#whoami", QUICK, "admin", |t| t.contains("admin"))
        .await;
    b.goto(&format!("{}/#/workspaces/{id}", server.base)).await;
    b.wait_text("#ws-status", PATIENCE, "online", |t| t.trim() == "online")
        .await;

    // Files: the configs root lists the template's config.yaml; opening it shows its content.
    let entry = b
        .wait("#files li[data-path=\"config.yaml\"] button", PATIENCE)
        .await;
    b.click(&entry).await;
    b.wait_text("#file-content", QUICK, "the manifest", |t| {
        t.contains("runtime")
    })
    .await;

    // Terminal: open it, run a command, read its output.
    let open = b.wait("#terminal-open", QUICK).await;
    b.click(&open).await;
    let input = b.wait("#terminal-input:enabled", PATIENCE).await;
    b.type_into(&input, "echo panel-$((40+2))\u{E007}").await;
    b.wait_text("#terminal-output", PATIENCE, "the command's output", |t| {
        t.contains("panel-42")
    })
    .await;
    b.screenshot("terminal").await;
    assert_no_csp_errors(&b).await;
}

/// Keyboard alone, with a visible focus all the way: sign in (the token field has the focus),
/// reach a workspace in the list with Tab and open it with Enter, see its empty A2A queue, press
/// Restart with Enter and read the result as a sentence, the focus staying on the button. Then the
/// system's dark setting: the page's colours follow it.
#[tokio::test]
async fn the_console_works_from_the_keyboard_in_light_and_dark() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &[]).await;
    let (status, created) = server
        .admin_post("/workspaces", &json!({"name": "keys", "template": "echo"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    server.wait_status(&id, "online", PATIENCE).await;

    let b = Browser::start("keyboard").await;
    b.color_scheme("light").await;
    b.goto(&server.base).await;
    b.wait("#token", PATIENCE).await;
    focused(&b, "#token").await;
    b.keys(&server.admin_token).await;
    tab_to(&b, "#signin", 1).await;
    b.keys(&ENTER.to_string()).await;
    b.wait_text("#whoami", QUICK, "admin", |t| t.contains("admin"))
        .await;

    let link = format!("#workspaces tr[data-id=\"{id}\"] a");
    b.wait(&link, PATIENCE).await;
    tab_to(&b, &link, 60).await;
    b.screenshot("list-focus").await;
    b.keys(&ENTER.to_string()).await;
    b.wait_text("#ws-status", PATIENCE, "online", |t| t.trim() == "online")
        .await;
    b.wait_text("#queue-empty", QUICK, "the queue's empty state", |t| {
        t.contains("Nothing queued")
    })
    .await;

    tab_to(&b, "#action-restart", 60).await;
    b.keys(&ENTER.to_string()).await;
    b.wait_text("#action-result", PATIENCE, "a sentence", |t| {
        t.starts_with("Restart requested")
    })
    .await;
    focused(&b, "#action-restart").await;
    b.wait_text("#ws-status", PATIENCE, "online again", |t| {
        t.trim() == "online"
    })
    .await;
    b.screenshot("light").await;

    // Light and dark from the system setting.
    let colours = "const cs = getComputedStyle(document.body);\
                   const f = getComputedStyle(document.activeElement);\
                   return [cs.backgroundColor, cs.color, f.outlineColor];";
    let light = b.script(colours, json!([])).await;
    b.color_scheme("dark").await;
    let dark = b.script(colours, json!([])).await;
    let brightness = |c: &serde_json::Value| -> u32 {
        c.as_str()
            .unwrap_or_default()
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .take(3)
            .filter_map(|v| v.trim().parse::<u32>().ok())
            .sum()
    };
    assert!(
        brightness(&dark[0]) + 300 < brightness(&light[0]),
        "a dark background in dark mode: light {light}, dark {dark}"
    );
    assert!(
        brightness(&dark[1]) > brightness(&light[1]) + 300,
        "light text in dark mode: light {light}, dark {dark}"
    );
    assert_ne!(light[2], dark[2], "the focus ring follows the scheme");
    focused(&b, "#action-restart").await;
    b.screenshot("dark").await;
    assert_no_csp_errors(&b).await;
}

/// At 10,000 workspaces the overview reads one page of 50 (not the whole list), says more are
/// left, loads the next page on "Load more", and a workspace created meanwhile shows up live
/// without a reload.
#[tokio::test]
async fn the_overview_stays_paged_at_ten_thousand_workspaces() {
    const TOTAL: usize = 10_000;
    const WORKERS: usize = 32;
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &[]).await;
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (http, base, token) = (
            http.clone(),
            server.base.clone(),
            server.admin_token.clone(),
        );
        workers.push(tokio::spawn(async move {
            for i in (w..TOTAL).step_by(WORKERS) {
                let resp = http
                    .post(format!("{base}/workspaces"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("agent-{i:05}"), "external": true}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(resp.status(), 201, "create {i}");
            }
        }));
    }
    for w in workers {
        w.await.expect("creator");
    }

    let b = Browser::start("ten-thousand").await;
    b.goto(&server.base).await;
    sign_in(&b, &server.admin_token).await;
    b.wait_text("#counts", PATIENCE, "the first page", |t| {
        t.starts_with("50 workspaces listed (more to load)")
    })
    .await;
    let rows = "return document.querySelectorAll('tbody tr').length;";
    assert_eq!(b.script(rows, json!([])).await, 50);
    // The page asked for one page, never the whole list.
    let asked = b
        .script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/workspaces?'));",
            json!([]),
        )
        .await;
    let asked: Vec<String> = serde_json::from_value(asked).expect("resource names");
    assert!(
        !asked.is_empty() && asked.iter().all(|n| n.contains("limit=50")),
        "list requests: {asked:?}"
    );
    b.screenshot("first-page").await;

    let more = b.wait("#load-more", QUICK).await;
    b.click(&more).await;
    b.wait_text("#counts", PATIENCE, "the second page", |t| {
        t.starts_with("100 workspaces listed (more to load)")
    })
    .await;

    // A new workspace appears live.
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "late-arrival", "external": true}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    b.wait_text("tbody", PATIENCE, "the new workspace", |t| {
        t.contains("late-arrival")
    })
    .await;
    b.screenshot("live-row").await;
    assert_no_csp_errors(&b).await;
}

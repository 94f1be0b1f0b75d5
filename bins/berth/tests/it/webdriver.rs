//! A small WebDriver client (the W3C protocol over HTTP, with reqwest) driving headless
//! Debian Chromium through `chromedriver`, for the console's browser tests. Only what the tests
//! use: navigate, find (CSS), wait, click, type, press keys (WebDriver key actions), read text
//! and attributes, run a script, emulate the system's dark mode (chromedriver's CDP bridge), take
//! a screenshot, and read the browser's console log (for CSP violations).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{free_port, repo_root};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The WebDriver key codes of Tab and Enter (for [`Browser::keys`]).
pub const TAB: char = '\u{E004}';
/// Enter.
pub const ENTER: char = '\u{E007}';

/// Where the browser and its driver are (Debian's `chromium` and `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One headless Chromium session; the driver is killed when dropped.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    /// Where screenshots go: `target/console-screens/<test>/`.
    shots: PathBuf,
    /// Screenshots taken so far (their number prefixes the file name).
    taken: std::sync::atomic::AtomicUsize,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `test` names the screenshot folder.
    pub async fn start(test: &str) -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console's browser tests need Debian's `{package}` \
                 (`apt-get install chromium chromium-driver`; `.ci/run` installs them)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--disable-extensions"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        // A fresh folder per run: a failing run's screenshots are the only ones there.
        let shots = repo_root().join("target/console-screens").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            shots,
            taken: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        // chromedriver wants a JSON body on every POST.
        if method == reqwest::Method::POST {
            req = req.json(&body.unwrap_or_else(|| json!({})));
        }
        let resp: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if let Some(err) = resp["value"]["error"].as_str() {
            panic!(
                "WebDriver {path}: {err}: {}",
                resp["value"]["message"].as_str().unwrap_or_default()
            );
        }
        resp["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css`, if any (no waiting).
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let resp = self
            .http
            .post(format!("{}/element", self.session))
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        resp["value"][ELEMENT]
            .as_str()
            .map(|s| Element(s.to_owned()))
    }

    /// Waits (up to `within`) for an element matching `css` that is displayed.
    pub async fn wait(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.try_find(css).await
                && self.displayed(&e).await
            {
                return e;
            }
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!(
                    "no visible {css:?} within {within:?}; page text: {}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` satisfies `pred`; returns the text.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Some(e) = self.try_find(css).await {
                last = self.text(&e).await;
                if pred(&last) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("{css:?} never became {what} (last: {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn displayed(&self, e: &Element) -> bool {
        let path = format!("/element/{}/displayed", e.0);
        let resp = self
            .http
            .get(format!("{}{path}", self.session))
            .send()
            .await;
        match resp {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["value"] == true),
            Err(_) => false,
        }
    }

    /// Clicks `e`.
    pub async fn click(&self, e: &Element) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            None,
        )
        .await;
    }

    /// Types `text` into `e` (after clearing it).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.0),
            None,
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses each character of `keys` in turn on whatever has the focus (WebDriver key
    /// actions: real key events, as a keyboard user's; [`TAB`], [`ENTER`] for those keys).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    /// Emulates the system's colour scheme (`"light"` or `"dark"`) for `prefers-color-scheme`,
    /// through chromedriver's bridge to the DevTools protocol (`Emulation.setEmulatedMedia`): plain
    /// WebDriver has no command for it.
    pub async fn color_scheme(&self, scheme: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}],
            }})),
        )
        .await;
    }

    /// The rendered text of `e`.    /// The rendered text of `e`.
    pub async fn text(&self, e: &Element) -> String {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The DOM property `name` of `e` (e.g. `value`).
    pub async fn property(&self, e: &Element, name: &str) -> Value {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{}/property/{name}", e.0),
            None,
        )
        .await
    }

    /// Runs `script` (a function body) with `args`; its return value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The page's whole text.
    pub async fn body_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The page's whole HTML (the live DOM, with input values as attributes where set).
    pub async fn dom(&self) -> String {
        self.script(
            "return document.documentElement.outerHTML + [...document.querySelectorAll('input,textarea')].map(e => e.value).join('\\n');",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves a screenshot as `<n>-<name>.png` under `target/console-screens/<test>/`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use std::sync::atomic::Ordering;
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = decode_base64(b64.as_str().unwrap_or_default());
        let path = self.shots.join(format!(
            "{:02}-{name}.png",
            self.taken.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// The browser console's messages since the last call (level and text).
    pub async fn console_log(&self) -> Vec<(String, String)> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session (chromedriver then quits Chromium), then stops the driver.
    /// A plain blocking `DELETE`, since a drop cannot await.
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        if let Some(rest) = self.session.strip_prefix("http://")
            && let Some((addr, path)) = rest.split_once('/')
            && let Ok(mut stream) = std::net::TcpStream::connect(addr)
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot), without a crate for it.
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

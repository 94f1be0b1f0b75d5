//! The connection payload handed to external (BYO-compute) workspaces (REFERENCE.md §9).
//!
//! Create (for an external workspace without a URL), credential rotation and re-show return it
//! as `connection`: the endpoints, the token, and copy-paste snippets for the common agent
//! runtimes. berth names MCP servers `berth-<slug>` where the reference used `molecule-<slug>`.
//!
//! The snippets never embed the token itself: they read it from `WORKSPACE_AUTH_TOKEN`, which
//! the user sets from the `auth_token` field, so a snippet pasted into a chat or a shell history
//! does not leak the credential.

use serde_json::{Map, Value};
use uuid::Uuid;

/// Prefix of every MCP server name.
const MCP_PREFIX: &str = "berth";
/// Longest slug kept in an MCP server name.
const MCP_SLUG_MAX: usize = 24;

/// The MCP server name for a workspace: `berth-<slug>`, where the slug is the name with ASCII
/// letters lower-cased, every run of other characters outside `[a-z0-9]` turned into one `-`,
/// trimmed of `-`, cut to 24 characters and trimmed again. An empty slug falls back to the first
/// 8 hex digits of the id (then `berth-<hex>`), and an empty fallback to plain `berth`.
pub fn mcp_server_name(name: &str, id: &Uuid) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // The slug is ASCII, so byte and character counts agree.
    let slug = slug.trim_matches('-');
    let slug = slug
        .get(..MCP_SLUG_MAX)
        .unwrap_or(slug)
        .trim_end_matches('-');
    if !slug.is_empty() {
        return format!("{MCP_PREFIX}-{slug}");
    }
    let hex = id.simple().to_string();
    let short = hex.get(..8).unwrap_or(&hex);
    if short.is_empty() {
        MCP_PREFIX.to_owned()
    } else {
        format!("{MCP_PREFIX}-{short}")
    }
}

/// Registers the agent with `curl`. `{{AGENT_NAME_JSON}}` is the workspace name as a JSON string,
/// already escaped for the surrounding single-quoted shell word.
const CURL_REGISTER_TEMPLATE: &str = r#"# Paste the auth_token from this response, and the URL where berth can reach your agent.
export WORKSPACE_AUTH_TOKEN='<auth_token>'
export AGENT_URL='https://agent.example.com'
curl -sS -X POST '{{PLATFORM_URL}}/registry/register' \
  -H "Authorization: Bearer $WORKSPACE_AUTH_TOKEN" \
  -H 'Origin: {{PLATFORM_URL}}' \
  -H 'Content-Type: application/json' \
  -d '{"id":"{{WORKSPACE_ID}}","url":"'"$AGENT_URL"'","agent_card":{"name":{{AGENT_NAME_JSON}},"description":"external agent","version":"1.0.0"}}'
"#;

/// Registers and heartbeats from Python using only the standard library.
const PYTHON_SNIPPET: &str = r#"# Python 3, standard library only. Set WORKSPACE_AUTH_TOKEN and AGENT_URL first.
import json, os, time, urllib.request

PLATFORM_URL = "{{PLATFORM_URL}}"
WORKSPACE_ID = "{{WORKSPACE_ID}}"
TOKEN = os.environ["WORKSPACE_AUTH_TOKEN"]

def post(path, body):
    req = urllib.request.Request(
        PLATFORM_URL + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Origin": PLATFORM_URL,
                 "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)

post("/registry/register", {
    "id": WORKSPACE_ID,
    "url": os.environ["AGENT_URL"],
    "agent_card": {"name": "my-agent", "description": "external agent", "version": "1.0.0"},
})
while True:  # berth marks the workspace offline when heartbeats stop
    post("/registry/heartbeat", {"workspace_id": WORKSPACE_ID, "active_tasks": 0})
    time.sleep(30)
"#;

/// Connects a Claude Code channel bridge to this workspace.
const CLAUDE_CODE_CHANNEL_SNIPPET: &str = r#"# Claude Code channel bridge: one entry per workspace it should serve.
export MOLECULE_WORKSPACES_JSON='[{"id":"{{WORKSPACE_ID}}","token":"'"$WORKSPACE_AUTH_TOKEN"'","platform_url":"{{PLATFORM_URL}}"}]'
claude
"#;

/// Adds the workspace as a user-scoped MCP server in any MCP-capable Claude client.
const UNIVERSAL_MCP_SNIPPET: &str = r#"claude mcp add {{MCP_SERVER_NAME}} -s user -- env WORKSPACE_ID={{WORKSPACE_ID}} PLATFORM_URL='{{PLATFORM_URL}}' WORKSPACE_AUTH_TOKEN="$WORKSPACE_AUTH_TOKEN" <your-a2a-mcp-bridge-command>
"#;

/// Hermes channel configuration.
const HERMES_CHANNEL_SNIPPET: &str = r#"# Hermes channel configuration (e.g. in the agent's .env)
MOLECULE_WORKSPACE_ID={{WORKSPACE_ID}}
MOLECULE_PLATFORM_URL={{PLATFORM_URL}}
MOLECULE_WORKSPACE_TOKEN=<auth_token>
"#;

/// Codex MCP server entry for `~/.codex/config.toml`.
const CODEX_SNIPPET: &str = r#"# ~/.codex/config.toml
[mcp_servers.{{MCP_SERVER_NAME}}]
command = "<your-a2a-mcp-bridge-command>"
env = { WORKSPACE_ID = "{{WORKSPACE_ID}}", PLATFORM_URL = "{{PLATFORM_URL}}", WORKSPACE_AUTH_TOKEN = "<auth_token>" }
# Inbound messages: run the same bridge in listener mode next to Codex so that
# A2A requests from berth reach this session.
"#;

/// OpenClaw MCP server registration.
const OPENCLAW_SNIPPET: &str = r#"openclaw mcp set {{MCP_SERVER_NAME}} --env WORKSPACE_ID={{WORKSPACE_ID}} --env PLATFORM_URL='{{PLATFORM_URL}}' --env WORKSPACE_AUTH_TOKEN="$WORKSPACE_AUTH_TOKEN" -- <your-a2a-mcp-bridge-command>
"#;

/// Kimi CLI bridge: an env file plus notifications through `POST /workspaces/<id>/notify`.
const KIMI_SNIPPET: &str = r#"# Kimi CLI bridge
mkdir -p ~/.molecule-ai/kimi-{{MCP_SERVER_NAME}}
cat > ~/.molecule-ai/kimi-{{MCP_SERVER_NAME}}/env <<'ENV'
WORKSPACE_ID={{WORKSPACE_ID}}
PLATFORM_URL={{PLATFORM_URL}}
ENV
chmod 600 ~/.molecule-ai/kimi-{{MCP_SERVER_NAME}}/env
echo "WORKSPACE_AUTH_TOKEN=$WORKSPACE_AUTH_TOKEN" >> ~/.molecule-ai/kimi-{{MCP_SERVER_NAME}}/env
# Send a message to the user from the bridge:
curl -sS -X POST '{{PLATFORM_URL}}/workspaces/{{WORKSPACE_ID}}/notify' \
  -H "Authorization: Bearer $WORKSPACE_AUTH_TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"message":"hello from kimi"}'
"#;

/// Percent-encodes every byte outside a conservative URL character set, so a platform URL can be
/// pasted inside single- or double-quoted shell words, TOML and Python strings without breaking
/// out of them (no quotes, backslashes, `$`, backticks or whitespace survive).
fn snippet_safe_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'/'
                    | b'?'
                    | b'#'
                    | b'['
                    | b']'
                    | b'@'
                    | b'&'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills the placeholders of one snippet template.
fn render(template: &str, platform_url: &str, id: &str, mcp_name: &str, name_json: &str) -> String {
    template
        .replace("{{PLATFORM_URL}}", platform_url)
        .replace("{{WORKSPACE_ID}}", id)
        .replace("{{MCP_SERVER_NAME}}", mcp_name)
        .replace("{{AGENT_NAME_JSON}}", name_json)
}

/// Builds the `connection` object: `workspace_id`, `platform_url` (trailing `/` removed),
/// `auth_token` (the plaintext token, or `""` on re-show), `registry_endpoint`,
/// `heartbeat_endpoint` and the eight snippets.
pub fn connection_payload(platform_url: &str, id: &Uuid, name: &str, auth_token: &str) -> Value {
    let platform_url = platform_url.trim_end_matches('/');
    let id_str = id.to_string();
    let mcp_name = mcp_server_name(name, id);
    let safe_url = snippet_safe_url(platform_url);
    // A JSON string inside a single-quoted shell word: only `'` needs escaping there.
    let name_json = Value::String(name.to_owned())
        .to_string()
        .replace('\'', r"'\''");
    let snippet =
        |template: &str| Value::String(render(template, &safe_url, &id_str, &mcp_name, &name_json));

    let mut map = Map::new();
    map.insert("workspace_id".into(), Value::String(id_str.clone()));
    map.insert(
        "platform_url".into(),
        Value::String(platform_url.to_owned()),
    );
    map.insert("auth_token".into(), Value::String(auth_token.to_owned()));
    map.insert(
        "registry_endpoint".into(),
        Value::String(format!("{platform_url}/registry/register")),
    );
    map.insert(
        "heartbeat_endpoint".into(),
        Value::String(format!("{platform_url}/registry/heartbeat")),
    );
    map.insert(
        "curl_register_template".into(),
        snippet(CURL_REGISTER_TEMPLATE),
    );
    map.insert("python_snippet".into(), snippet(PYTHON_SNIPPET));
    map.insert(
        "claude_code_channel_snippet".into(),
        snippet(CLAUDE_CODE_CHANNEL_SNIPPET),
    );
    map.insert(
        "universal_mcp_snippet".into(),
        snippet(UNIVERSAL_MCP_SNIPPET),
    );
    map.insert(
        "hermes_channel_snippet".into(),
        snippet(HERMES_CHANNEL_SNIPPET),
    );
    map.insert("codex_snippet".into(), snippet(CODEX_SNIPPET));
    map.insert("openclaw_snippet".into(), snippet(OPENCLAW_SNIPPET));
    map.insert("kimi_snippet".into(), snippet(KIMI_SNIPPET));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);

    #[test]
    fn mcp_names() {
        assert_eq!(mcp_server_name("My Agent", &ID), "berth-my-agent");
        assert_eq!(
            mcp_server_name("  --Hello__World!!  ", &ID),
            "berth-hello-world"
        );
        assert_eq!(mcp_server_name("Agent 007", &ID), "berth-agent-007");
        // Non-ASCII letters are "other characters".
        assert_eq!(mcp_server_name("Café Über", &ID), "berth-caf-ber");
        assert_eq!(mcp_server_name("日本語", &ID), "berth-12345678");
        assert_eq!(mcp_server_name("", &ID), "berth-12345678");
        assert_eq!(mcp_server_name("---", &ID), "berth-12345678");
        assert_eq!(mcp_server_name("", &Uuid::nil()), "berth-00000000");
    }

    #[test]
    fn mcp_name_truncation() {
        let name = "abcdefghijklmnopqrstuvwxyz0123";
        assert_eq!(mcp_server_name(name, &ID), "berth-abcdefghijklmnopqrstuvwx");
        // A cut that ends on a separator is trimmed again.
        let name = "abcdefghijklmnopqrstuvw xyz";
        assert_eq!(mcp_server_name(name, &ID), "berth-abcdefghijklmnopqrstuvw");
        // Leading separators are trimmed before the cut.
        let name = "!!!abcdefghijklmnopqrstuvwxyz";
        assert_eq!(mcp_server_name(name, &ID), "berth-abcdefghijklmnopqrstuvwx");
    }

    #[test]
    fn payload_has_exactly_the_reference_keys() {
        let v = connection_payload("https://berth.example.com/", &ID, "My Agent", "tok-123");
        let Value::Object(map) = &v else {
            panic!("payload is not an object: {v}");
        };
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec![
            "workspace_id",
            "platform_url",
            "auth_token",
            "registry_endpoint",
            "heartbeat_endpoint",
            "curl_register_template",
            "python_snippet",
            "claude_code_channel_snippet",
            "universal_mcp_snippet",
            "hermes_channel_snippet",
            "codex_snippet",
            "openclaw_snippet",
            "kimi_snippet",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["workspace_id"], "12345678-9abc-def0-1234-56789abcdef0");
        assert_eq!(v["platform_url"], "https://berth.example.com");
        assert_eq!(v["auth_token"], "tok-123");
        assert_eq!(
            v["registry_endpoint"],
            "https://berth.example.com/registry/register"
        );
        assert_eq!(
            v["heartbeat_endpoint"],
            "https://berth.example.com/registry/heartbeat"
        );
    }

    #[test]
    fn snippets_are_filled_and_never_carry_the_token() {
        let v = connection_payload("http://host:8080//", &ID, "My Agent", "tok-secret-123");
        let Value::Object(map) = &v else {
            panic!("payload is not an object: {v}");
        };
        for (key, value) in map {
            if !key.ends_with("_snippet") && key != "curl_register_template" {
                continue;
            }
            let text = value.as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{key}");
            assert!(
                !text.contains("{{"),
                "{key} has an unfilled placeholder: {text}"
            );
            assert!(!text.contains("tok-secret-123"), "{key} leaks the token");
            assert!(
                text.contains("http://host:8080"),
                "{key} lacks the platform URL"
            );
            assert!(!text.contains("http://host:8080/registry//"), "{key}");
        }
        let curl = v["curl_register_template"].as_str().unwrap_or_default();
        assert!(curl.contains("export WORKSPACE_AUTH_TOKEN="));
        assert!(curl.contains("export AGENT_URL="));
        assert!(curl.contains("'http://host:8080/registry/register'"));
        assert!(curl.contains("-H 'Origin: http://host:8080'"));
        assert!(curl.contains("Authorization: Bearer $WORKSPACE_AUTH_TOKEN"));
        assert!(curl.contains(
            r#"{"id":"12345678-9abc-def0-1234-56789abcdef0","url":"'"$AGENT_URL"'","agent_card":{"name":"My Agent","#
        ));
        assert!(curl.contains(r#""description":"external agent","version":"1.0.0"}}"#));
        let mcp = v["universal_mcp_snippet"].as_str().unwrap_or_default();
        assert!(mcp.starts_with("claude mcp add berth-my-agent -s user -- env WORKSPACE_ID=12345678-9abc-def0-1234-56789abcdef0 "));
        let codex = v["codex_snippet"].as_str().unwrap_or_default();
        assert!(codex.contains("[mcp_servers.berth-my-agent]"));
        let openclaw = v["openclaw_snippet"].as_str().unwrap_or_default();
        assert!(openclaw.starts_with("openclaw mcp set berth-my-agent "));
        let kimi = v["kimi_snippet"].as_str().unwrap_or_default();
        assert!(kimi.contains("~/.molecule-ai/kimi-berth-my-agent/"));
        assert!(kimi.contains("/workspaces/12345678-9abc-def0-1234-56789abcdef0/notify"));
    }

    #[test]
    fn hostile_inputs_cannot_break_out_of_quotes() {
        let v = connection_payload("http://h/'$(id)`x\" y", &ID, "it's \"me\"", "");
        assert_eq!(v["auth_token"], "");
        assert_eq!(v["platform_url"], "http://h/'$(id)`x\" y");
        let curl = v["curl_register_template"].as_str().unwrap_or_default();
        assert!(curl.contains("'http://h/%27%24%28id%29%60x%22%20y/registry/register'"));
        assert!(curl.contains(r#""name":"it'\''s \"me\"""#));
    }

    #[test]
    fn safe_url_keeps_ordinary_urls() {
        for url in [
            "https://berth.example.com:8443/base",
            "http://[::1]:8080",
            "http://user@h/p?q=1&r=2#f",
        ] {
            assert_eq!(snippet_safe_url(url), url);
        }
    }
}

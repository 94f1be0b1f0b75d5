//! The agent's configuration, read once from the environment the provisioner prepared.
//!
//! Reading goes through a lookup function rather than `std::env` directly so the rules can be
//! tested without touching the process environment.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// The workspace bearer token. Its `Debug` never shows the value, so a logged config is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The secret of a warm-pool member (`$WORKSPACE_CONFIG_PATH/.pool_secret`): the bearer the
/// platform presents on the pool routes. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolSecret(String);

impl PoolSecret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The raw value, for the constant-time comparison with a presented bearer only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PoolSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolSecret([redacted])")
    }
}

/// The warm-pool side of the configuration: present only when the agent starts as a pool member.
#[derive(Debug, Clone)]
pub struct PoolMember {
    /// The secret read from `.pool_secret`.
    pub secret: PoolSecret,
    /// `WORKSPACE_CONFIG_PATH`: where a claim writes the workspace's files.
    pub config_dir: PathBuf,
}

/// The file whose presence (with no token configured) makes the agent a warm-pool member.
pub const POOL_SECRET_FILE: &str = ".pool_secret";
/// The token file in the config dir, read at start and after a pool claim.
pub const TOKEN_FILE: &str = ".auth_token";

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `WORKSPACE_ID`: the workspace this agent is.
    pub workspace_id: String,
    /// `PLATFORM_URL`, without a trailing slash.
    pub platform_url: String,
    /// `WORKSPACE_AUTH_TOKEN`, else `$WORKSPACE_CONFIG_PATH/.auth_token`.
    pub token: Option<Token>,
    /// Warm-pool mode: `$WORKSPACE_CONFIG_PATH/.pool_secret` exists and no token is configured
    /// (a token wins, and the pool secret file is then ignored). The agent serves, but registers
    /// only once the platform has claimed it (`pool.rs`).
    pub pool: Option<PoolMember>,
    /// `AGENT_HOST`: the address the A2A server binds.
    pub host: IpAddr,
    /// `AGENT_PORT`: the port the A2A server binds.
    pub port: u16,
    /// `AGENT_URL`: the URL advertised to the platform.
    pub agent_url: String,
    /// `HEARTBEAT_INTERVAL_SECS`.
    pub heartbeat_interval: Duration,
    /// `WORKSPACE_NAME`, else the `name:` line of `$WORKSPACE_CONFIG_PATH/config.yaml`, else the id.
    pub name: String,
    /// `AGENT_MAX_CONCURRENCY`: A2A requests handled at once; while that many are in flight a
    /// new connection is closed unanswered (the "busy" signal of the platform's A2A proxy).
    /// `0` (the default) means no limit.
    pub max_concurrency: u64,
    /// `AGENT_REPLY_DELAY_MS`: how long each `message/send` takes (simulated work); default 0.
    pub reply_delay: Duration,
    /// `AGENT_CRASH_AFTER_MS`: play an agent that dies while starting: serve, never register,
    /// and exit with status 3 after this long (tests of the platform's start watch). Unset: no.
    pub crash_after: Option<Duration>,
}

const DEFAULT_PORT: u16 = 8000;
const DEFAULT_HEARTBEAT_SECS: u64 = 30;

impl Config {
    /// Reads the configuration through `lookup` (normally `std::env::var`); empty values count as
    /// unset. Files named by `WORKSPACE_CONFIG_PATH` are read from disk.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        // A whole number, or `default` when unset.
        let number = |key: &str, default: u64| -> anyhow::Result<u64> {
            match get(key) {
                Some(s) => s
                    .trim()
                    .parse()
                    .with_context(|| format!("{key} {s:?} is not a number")),
                None => Ok(default),
            }
        };

        let workspace_id = get("WORKSPACE_ID").context("WORKSPACE_ID is required")?;
        let platform_url = get("PLATFORM_URL")
            .context("PLATFORM_URL is required")?
            .trim_end_matches('/')
            .to_owned();
        let config_dir = get("WORKSPACE_CONFIG_PATH").map(PathBuf::from);

        let token = match get("WORKSPACE_AUTH_TOKEN") {
            Some(t) => Some(Token::new(t.trim().to_owned())),
            None => match &config_dir {
                Some(dir) => read_token_file(&dir.join(TOKEN_FILE))?,
                None => None,
            },
        };
        let pool = match (&token, &config_dir) {
            (None, Some(dir)) => {
                read_pool_secret(&dir.join(POOL_SECRET_FILE))?.map(|secret| PoolMember {
                    secret,
                    config_dir: dir.clone(),
                })
            }
            _ => None,
        };

        let port = match get("AGENT_PORT") {
            Some(p) => p
                .trim()
                .parse()
                .with_context(|| format!("AGENT_PORT {p:?} is not a port number"))?,
            None => DEFAULT_PORT,
        };
        let host = match get("AGENT_HOST") {
            Some(h) => h
                .trim()
                .parse()
                .with_context(|| format!("AGENT_HOST {h:?} is not an IP address"))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let agent_url = get("AGENT_URL")
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        let heartbeat_secs = number("HEARTBEAT_INTERVAL_SECS", DEFAULT_HEARTBEAT_SECS)?;
        if heartbeat_secs == 0 {
            bail!("HEARTBEAT_INTERVAL_SECS must be at least 1");
        }

        let max_concurrency = number("AGENT_MAX_CONCURRENCY", 0)?;
        let reply_delay_ms = number("AGENT_REPLY_DELAY_MS", 0)?;
        let crash_after = get("AGENT_CRASH_AFTER_MS")
            .is_some()
            .then(|| number("AGENT_CRASH_AFTER_MS", 0))
            .transpose()?
            .map(Duration::from_millis);

        let name = get("WORKSPACE_NAME")
            .map(|n| n.trim().to_owned())
            .or_else(|| {
                let dir = config_dir.as_ref()?;
                let text = std::fs::read_to_string(dir.join("config.yaml")).ok()?;
                manifest_name(&text)
            })
            .unwrap_or_else(|| workspace_id.clone());

        Ok(Self {
            workspace_id,
            platform_url,
            token,
            pool,
            host,
            port,
            agent_url,
            heartbeat_interval: Duration::from_secs(heartbeat_secs),
            name,
            max_concurrency,
            reply_delay: Duration::from_millis(reply_delay_ms),
            crash_after,
        })
    }
}

/// Reads the token file; a missing or empty file means "no token", any other failure is an error.
pub(crate) fn read_token_file(path: &Path) -> anyhow::Result<Option<Token>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(Token::new(s.trim().to_owned()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads the pool secret file; missing means "not a pool member". An empty file is an error: a
/// member whose secret is empty could be claimed by anyone who can reach its port.
fn read_pool_secret(path: &Path) -> anyhow::Result<Option<PoolSecret>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => bail!("{} is empty", path.display()),
        Ok(s) => Ok(Some(PoolSecret::new(s.trim().to_owned()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The value of the first top-level `name:` line of a template manifest: trimmed, an inline
/// ` #` comment dropped, surrounding quotes stripped. A line scan is enough for one scalar key.
pub(crate) fn manifest_name(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("name:"))
        .map(|value| {
            let value = value.split(" #").next().unwrap_or(value).trim();
            value
                .trim_matches(|c| c == '"' || c == '\'')
                .trim()
                .to_owned()
        })
        .find(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_when_only_the_required_vars_are_set() {
        let c = Config::from_lookup(lookup(&[
            ("WORKSPACE_ID", "ws-1"),
            ("PLATFORM_URL", "http://127.0.0.1:8080/"),
        ]))
        .unwrap();
        assert_eq!(c.workspace_id, "ws-1");
        assert_eq!(c.platform_url, "http://127.0.0.1:8080");
        assert_eq!(c.port, 8000);
        assert_eq!(c.host, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(c.agent_url, "http://127.0.0.1:8000");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.token, None);
        assert_eq!(c.name, "ws-1");
        assert_eq!(c.max_concurrency, 0);
        assert_eq!(c.reply_delay, Duration::ZERO);
    }

    #[test]
    fn busy_simulation_settings_are_read() {
        let c = Config::from_lookup(lookup(&[
            ("WORKSPACE_ID", "w"),
            ("PLATFORM_URL", "http://p"),
            ("AGENT_MAX_CONCURRENCY", "1"),
            ("AGENT_REPLY_DELAY_MS", "1500"),
        ]))
        .unwrap();
        assert_eq!(c.max_concurrency, 1);
        assert_eq!(c.reply_delay, Duration::from_millis(1500));
    }

    #[test]
    fn required_vars_are_named_when_missing() {
        let err = Config::from_lookup(lookup(&[("PLATFORM_URL", "http://x")])).unwrap_err();
        assert!(err.to_string().contains("WORKSPACE_ID"), "{err}");
        let err = Config::from_lookup(lookup(&[("WORKSPACE_ID", "w")])).unwrap_err();
        assert!(err.to_string().contains("PLATFORM_URL"), "{err}");
    }

    #[test]
    fn token_file_and_manifest_name_come_from_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".auth_token"), "  tok-123\n").unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "description: x\n  name: nested\nname: \"My Agent\" # shown\nruntime: r\n",
        )
        .unwrap();
        let path = dir.path().to_str().unwrap();
        let c = Config::from_lookup(lookup(&[
            ("WORKSPACE_ID", "w"),
            ("PLATFORM_URL", "http://p"),
            ("WORKSPACE_CONFIG_PATH", path),
            ("AGENT_PORT", "9123"),
        ]))
        .unwrap();
        assert_eq!(c.token, Some(Token::new("tok-123".into())));
        assert_eq!(c.name, "My Agent");
        assert_eq!(c.agent_url, "http://127.0.0.1:9123");

        let c = Config::from_lookup(lookup(&[
            ("WORKSPACE_ID", "w"),
            ("PLATFORM_URL", "http://p"),
            ("WORKSPACE_CONFIG_PATH", path),
            ("WORKSPACE_AUTH_TOKEN", "from-env"),
            ("WORKSPACE_NAME", "Env Name"),
            ("AGENT_URL", "http://agent.example:1/"),
            ("AGENT_HOST", "127.0.0.1"),
            ("HEARTBEAT_INTERVAL_SECS", "2"),
        ]))
        .unwrap();
        assert_eq!(c.token, Some(Token::new("from-env".into())));
        assert_eq!(c.name, "Env Name");
        assert_eq!(c.agent_url, "http://agent.example:1");
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn a_pool_secret_without_a_token_makes_a_pool_member() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".pool_secret"), " pool-s3cret\n").unwrap();
        let path = dir.path().to_str().unwrap();
        let base = [
            ("WORKSPACE_ID", "w"),
            ("PLATFORM_URL", "http://p"),
            ("WORKSPACE_CONFIG_PATH", path),
        ];
        let c = Config::from_lookup(lookup(&base)).unwrap();
        let pool = c.pool.as_ref().expect("pool mode");
        assert_eq!(pool.secret, PoolSecret::new("pool-s3cret".into()));
        assert_eq!(pool.config_dir, dir.path());
        assert_eq!(c.token, None);
        let shown = format!("{c:?}");
        assert!(!shown.contains("pool-s3cret"), "{shown}");

        // A token wins: normal mode, the pool secret file ignored.
        let mut with_env_token = base.to_vec();
        with_env_token.push(("WORKSPACE_AUTH_TOKEN", "tok"));
        assert!(
            Config::from_lookup(lookup(&with_env_token))
                .unwrap()
                .pool
                .is_none()
        );
        std::fs::write(dir.path().join(".auth_token"), "tok\n").unwrap();
        assert!(Config::from_lookup(lookup(&base)).unwrap().pool.is_none());

        // An empty secret is refused rather than accepted as "any bearer".
        std::fs::remove_file(dir.path().join(".auth_token")).unwrap();
        std::fs::write(dir.path().join(".pool_secret"), "\n").unwrap();
        let err = Config::from_lookup(lookup(&base)).unwrap_err();
        assert!(err.to_string().contains(".pool_secret"), "{err}");
    }

    #[test]
    fn bad_numbers_are_refused() {
        for (key, value) in [
            ("AGENT_PORT", "http"),
            ("AGENT_HOST", "localhost"),
            ("HEARTBEAT_INTERVAL_SECS", "0"),
            ("HEARTBEAT_INTERVAL_SECS", "soon"),
            ("AGENT_MAX_CONCURRENCY", "-1"),
            ("AGENT_REPLY_DELAY_MS", "later"),
        ] {
            let r = Config::from_lookup(lookup(&[
                ("WORKSPACE_ID", "w"),
                ("PLATFORM_URL", "http://p"),
                (key, value),
            ]));
            assert!(r.is_err(), "{key}={value}");
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let c = Config::from_lookup(lookup(&[
            ("WORKSPACE_ID", "w"),
            ("PLATFORM_URL", "http://p"),
            ("WORKSPACE_AUTH_TOKEN", "s3cret-value"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}

//! Start-up wiring: secrets on disk, the store by URL scheme.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use berth_store::{KeyRing, PgStore, SqliteStore, WorkspaceStore};
use secrecy::{ExposeSecret, SecretString};

use crate::config::StoreArgs;

/// Where `berth serve` keeps the generated admin token of `data_dir` (and where the client
/// commands look for it when the server is on this machine).
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// Reads a secret file, or creates it (mode 0600, never overwritten) with `generate()`.
/// Returns the secret and whether it was generated now.
pub fn read_or_create_secret(
    path: &Path,
    generate: impl FnOnce() -> SecretString,
) -> Result<(SecretString, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim().to_owned();
            if s.is_empty() {
                bail!(
                    "{} is empty; delete it to generate a new one",
                    path.display()
                );
            }
            return Ok((SecretString::from(s), false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = generate();
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", secret.expose_secret())
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()?;
    Ok((secret, true))
}

/// A fresh admin token: 32 random bytes, base64url.
pub fn generate_token() -> SecretString {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the operating system random source failed");
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// What `berth serve` tells the operator about the admin token on stderr: where the file is,
/// and, the first time (`created`), that a token was generated — with its value only when
/// `terminal` (stderr is a terminal), so that redirected output (a file, a service manager's
/// journal, a container log) never holds the credential.
pub fn admin_token_notice(
    token: &SecretString,
    created: bool,
    path: &Path,
    terminal: bool,
) -> String {
    let mut out = String::new();
    if created {
        if terminal {
            out.push_str(&format!(
                "berth: generated admin token {}\n",
                token.expose_secret()
            ));
        } else {
            out.push_str("berth: generated admin token (not shown: stderr is not a terminal)\n");
        }
    }
    out.push_str(&format!(
        "berth: admin token in {} (use: Authorization: Bearer $(cat {}))\n",
        path.display(),
        path.display()
    ));
    out.push_str(
        "berth: the berth CLI on this machine reads it from there: try `berth workspace list` \
         from this directory (with the same --data-dir, if you gave one)\n",
    );
    out
}

/// The secret key ring: from configuration, else the key file (generated on first start).
pub fn key_ring(args: &StoreArgs) -> Result<KeyRing> {
    let text = match &args.secret_keys {
        Some(t) => t.clone(),
        None => {
            let path = args.data_dir.join("secret-keys");
            let (text, created) = read_or_create_secret(&path, || KeyRing::generate_line("k1"))?;
            if created {
                tracing::info!(path = %path.display(), "generated the secret encryption key");
            }
            text
        }
    };
    KeyRing::parse(&text).context("invalid secret key ring")
}

/// Refuses to serve with a key ring that cannot open what the database holds: a key id in use
/// that the ring lacks (a missing key) or whose key opens none of its values (a wrong key, e.g.
/// a regenerated key file). Starting anyway would hand workspaces missing secrets.
pub async fn check_key_ring(store: &dyn WorkspaceStore, args: &StoreArgs) -> Result<()> {
    let bad = store
        .unreadable_key_ids()
        .await
        .context("checking the secret key ring against the database")?;
    if bad.is_empty() {
        return Ok(());
    }
    let details: Vec<String> = bad
        .iter()
        .map(|(id, e)| match e {
            berth_store::CipherError::UnknownKey(_) => {
                format!("{id:?} (missing from the key ring)")
            }
            _ => format!("{id:?} (present, but it does not open the values sealed with it)"),
        })
        .collect();
    let source = match &args.secret_keys {
        Some(_) => "--secret-keys / BERTH_SECRET_KEYS".to_owned(),
        None => args.data_dir.join("secret-keys").display().to_string(),
    };
    bail!(
        "refusing to start: the database holds secrets sealed with key {} that the secret key ring \
         ({source}) cannot open; start with the key ring that sealed them (after a rotation, keep \
         the old key after the new one until `berth secrets rotate-key` has finished)",
        details.join(", ")
    )
}

/// Opens the store the configuration names, running migrations.
pub async fn open_store(args: &StoreArgs) -> Result<(Arc<dyn WorkspaceStore>, String)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let keys = key_ring(args)?;
    match args
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned())
    {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PgStore::connect(&url, keys)
                .await
                .context("connecting to PostgreSQL")?;
            Ok((Arc::new(store), "postgresql".into()))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let store = SqliteStore::connect(&url, keys)
                .await
                .context("opening SQLite")?;
            Ok((Arc::new(store), "sqlite".into()))
        }
        Some(_) => bail!("DATABASE_URL must start with postgres://, postgresql:// or sqlite:"),
        None => {
            let path = args.data_dir.join("berth.db");
            let store = SqliteStore::open(&path, keys)
                .await
                .context("opening SQLite")?;
            Ok((Arc::new(store), format!("sqlite ({})", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_shown_only_on_a_terminal() {
        let token = SecretString::from("tok-123".to_owned());
        let path = Path::new("/data/admin-token");
        let shown = admin_token_notice(&token, true, path, true);
        assert!(shown.contains("generated admin token tok-123"), "{shown}");
        assert!(shown.contains("/data/admin-token"), "{shown}");
        for (created, terminal) in [(true, false), (false, true), (false, false)] {
            let text = admin_token_notice(&token, created, path, terminal);
            assert!(!text.contains("tok-123"), "{created} {terminal}: {text}");
            assert!(
                text.contains("admin token in /data/admin-token"),
                "{created} {terminal}: {text}"
            );
            assert_eq!(text.contains("generated admin token"), created, "{text}");
            assert!(text.contains("`berth workspace list`"), "{text}");
        }
    }
}

//! The command line: a mode word followed by `--name value` pairs.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Parsed arguments.
pub struct Args {
    mode: String,
    options: HashMap<String, String>,
}

impl Args {
    /// Parses `mode --name value …`.
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Self> {
        let mode = words
            .next()
            .context("missing mode (create, get, heartbeat, …)")?;
        let mut options = HashMap::new();
        while let Some(word) = words.next() {
            let Some(name) = word.strip_prefix("--") else {
                bail!("expected --name, got {word:?}");
            };
            let value = words
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            options.insert(name.to_owned(), value);
        }
        Ok(Self { mode, options })
    }

    /// The mode word.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// A required string option.
    pub fn str(&self, name: &str) -> Result<&str> {
        self.opt(name)
            .with_context(|| format!("--{name} is required for {}", self.mode))
    }

    /// An optional string option.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// A number, or `default` when absent.
    pub fn num<T: FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.opt(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{name} {v:?} is not a number")),
        }
    }

    /// `--count`, at least 1.
    pub fn count(&self) -> Result<usize> {
        Ok(self.num("count", 100usize)?.max(1))
    }

    /// `--concurrency`, at least 1.
    pub fn concurrency(&self) -> Result<usize> {
        Ok(self.num("concurrency", 1usize)?.max(1))
    }

    /// `--max-secs`: the time bound of a run (default 120 s).
    pub fn max_time(&self) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.num("max-secs", 120.0f64)?))
    }
}

//! DNS resolution for the SSRF check, behind a port so tests and embedders control it.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

/// Resolves a host name to its addresses.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HostResolver: Send + Sync {
    /// All A/AAAA addresses of `host`, or a human-readable reason it could not be resolved.
    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (getaddrinfo via tokio), bounded by a timeout.
#[derive(Debug, Clone)]
pub struct SystemResolver {
    /// How long one lookup may take.
    pub timeout: Duration,
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
        }
    }
}

#[async_trait]
impl HostResolver for SystemResolver {
    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let lookup = tokio::net::lookup_host((host, 0));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err("lookup timed out".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
        }
    }
}

//! Loopback ports for agents that bind a port of the host (process agents, host-network
//! containers).
//!
//! Binding `127.0.0.1:0`, reading the port and releasing it races with everything else on the
//! host: the kernel hands `:0` binds *and* the source ports of outgoing connections out of the
//! same ephemeral range, so under load another agent's heartbeat connection can take the port
//! before the new agent binds it (seen as `Address already in use` in about 1 of 750 concurrent
//! creates). [`PortPool`] avoids that race at its root: it picks ports *below* the ephemeral
//! range (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never allocates on its
//! own, remembers which ones it handed out until they are released, and checks each candidate
//! with a bind. What is left — another program binding that very port in between — is handled
//! by the backends, which retry a start that failed on a taken port with a fresh one
//! ([`START_ATTEMPTS`], [`is_address_in_use`]).

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::Error;

/// How many times a start that failed on a taken port is tried, each time with a fresh port.
pub const START_ATTEMPTS: usize = 3;

/// The lowest port handed out.
const FLOOR: u16 = 20_000;
/// The ports handed out when the ephemeral range cannot be read (Linux's default starts at
/// 32768).
const DEFAULT_CEILING: u16 = 32_767;
/// Candidates tried before giving up.
const CANDIDATES: usize = 256;

/// Loopback ports handed to agents, see the module docs.
#[derive(Debug)]
pub struct PortPool {
    low: u16,
    high: u16,
    taken: Mutex<HashSet<u16>>,
}

impl Default for PortPool {
    fn default() -> Self {
        Self::new()
    }
}

impl PortPool {
    /// A pool over the ports from 20000 up to just below the host's ephemeral range.
    pub fn new() -> Self {
        let ceiling = ephemeral_low()
            .map(|low| low.saturating_sub(1))
            .filter(|c| *c > FLOOR + 1024)
            .unwrap_or(DEFAULT_CEILING);
        Self::with_range(FLOOR, ceiling)
    }

    /// A pool over `low..=high`.
    pub fn with_range(low: u16, high: u16) -> Self {
        assert!(low <= high && low > 0, "port range {low}..={high}");
        Self {
            low,
            high,
            taken: Mutex::new(HashSet::new()),
        }
    }

    /// A port that no agent of this pool holds and that nothing on the host has bound now. It
    /// stays reserved until [`PortPool::release`].
    pub fn reserve(&self) -> Result<u16, Error> {
        let span = u32::from(self.high - self.low) + 1;
        let mut seed = [0u8; 4];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Backend(format!("picking a port: no randomness: {e}")))?;
        let start = u32::from_le_bytes(seed) % span;
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        // A stride coprime with most spans walks the range without clustering.
        for i in 0..CANDIDATES.min(span as usize) {
            let offset = (start + (i as u32).wrapping_mul(7919)) % span;
            let port = self.low + offset as u16;
            if taken.contains(&port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                taken.insert(port);
                return Ok(port);
            }
        }
        Err(Error::Backend(format!(
            "no free loopback port in {}..={} after {CANDIDATES} tries",
            self.low, self.high
        )))
    }

    /// Gives `port` back (its agent stopped, or its start failed).
    pub fn release(&self, port: u16) {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
    }

    /// How many ports are reserved now.
    pub fn reserved(&self) -> usize {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The low end of the kernel's ephemeral port range, if it can be read.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether an agent's output says it could not bind its port.
pub fn is_address_in_use(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    lower.contains("address already in use")
        || lower.contains("eaddrinuse")
        || lower.contains("os error 98")
}

/// The URLs of agents whose start is still in its grace period, by workspace
/// ([`crate::Provisioner::starting_url`]); shared by the process and Docker backends.
#[derive(Debug, Default)]
pub struct StartingUrls(
    std::sync::Mutex<std::collections::HashMap<berth_domain::WorkspaceId, String>>,
);

impl StartingUrls {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<berth_domain::WorkspaceId, String>>
    {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `id`'s agent is starting at `url`.
    pub fn insert(&self, id: berth_domain::WorkspaceId, url: String) {
        self.map().insert(id, url);
    }

    /// `id`'s start is over (either way).
    pub fn remove(&self, id: berth_domain::WorkspaceId) {
        self.map().remove(&id);
    }

    /// The URL of `id`'s start in its grace, if one is.
    pub fn get(&self, id: berth_domain::WorkspaceId) -> Option<String> {
        self.map().get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_unique_bindable_and_below_the_ephemeral_range() {
        let pool = PortPool::new();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let port = pool.reserve().unwrap();
            assert!(port >= FLOOR, "{port}");
            if let Some(low) = ephemeral_low() {
                assert!(port < low, "{port} is in the ephemeral range from {low}");
            }
            assert!(seen.insert(port), "{port} handed out twice");
        }
        assert_eq!(pool.reserved(), 200);
        for port in &seen {
            pool.release(*port);
        }
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_bound_port_is_skipped_and_a_full_range_is_an_error() {
        // A range of one port that something holds: nothing to hand out.
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let pool = PortPool::with_range(port, port);
        let err = pool.reserve().unwrap_err();
        assert!(err.to_string().contains("no free loopback port"), "{err}");
        drop(held);
        assert_eq!(pool.reserve().unwrap(), port);
        // Reserved now: not handed out again until released.
        assert!(pool.reserve().is_err());
        pool.release(port);
        assert_eq!(pool.reserve().unwrap(), port);
    }

    #[test]
    fn address_in_use_is_recognised_in_agent_output() {
        assert!(is_address_in_use(
            "Error: binding 127.0.0.1:2000: Address already in use (os error 98)"
        ));
        assert!(is_address_in_use("listen EADDRINUSE: :::3000"));
        assert!(!is_address_in_use("connection refused"));
    }
}

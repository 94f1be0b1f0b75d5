//! The HTTP client under [`Client`](crate::Client): reqwest over rustls with the ring provider.
//!
//! berth builds reqwest without a TLS provider of its own (`rustls-no-provider`: aws-lc, reqwest's
//! default, needs cmake), so a process must install one before it builds a client; this module
//! does, once. A plain `http://` server needs no CA roots, so none are loaded for it: a machine
//! or container without a CA bundle can still talk to a local berth. `https://` is verified
//! against the system's roots.

use std::time::Duration;

/// Installs rustls' ring provider as the process default, once (a provider installed already
/// is as good). [`Client::new`](crate::Client::new) calls it; call it yourself before building
/// other reqwest clients in a process that uses only this crate.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // rustls deprecates the ring provider as lacking post-quantum key exchange; it is the
        // provider that builds with this toolchain (aws-lc needs cmake), so it is kept.
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        let _ = ring.install_default();
    });
}

/// A reqwest client for a server at `base` (already checked to be `http://` or `https://`).
pub(crate) fn http_client(base: &reqwest::Url) -> Result<reqwest::Client, reqwest::Error> {
    install_tls_provider();
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("berth-client/", env!("CARGO_PKG_VERSION")));
    let builder = if base.scheme() == "https" {
        builder
    } else {
        builder.tls_certs_only(std::iter::empty())
    };
    builder.build()
}

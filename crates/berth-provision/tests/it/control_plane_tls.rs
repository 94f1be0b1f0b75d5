//! The control plane over TLS (issue #19): the client verifies the server's certificate (a
//! server signed by a CA the client does not trust is refused, one it trusts is used), and a
//! plain `http://` control plane is refused unless allowed for development.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use berth_provision::{ControlPlaneConfig, ControlPlaneProvisioner, Provisioner as _};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("TLS fixture")
}

/// A TLS listener for axum: each connection's handshake is done before it is handed over.
struct Tls {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for Tls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate ends its handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A fake control plane on `https://localhost:<port>` whose provision route answers 201.
async fn https_control_plane() -> String {
    berth_provision::install_tls_provider();
    let certs = CertificateDer::pem_slice_iter(&fixture("server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_slice(&fixture("server.key")).expect("server key");
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let app = Router::new().route(
        "/cp/workspaces/provision",
        post(|| async {
            (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({"instance_id": "i-tls", "private_ip": "10.0.0.9", "state": "pending", "error": ""})),
            )
        }),
    );
    let listener = Tls {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("https://localhost:{port}")
}

fn request() -> berth_provision::ProvisionRequest {
    berth_provision::ProvisionRequest {
        workspace_id: berth_domain::WorkspaceId::new_v4(),
        name: "tls".into(),
        runtime: "claude-code".into(),
        tier: 2,
        template_path: None,
        config_files: Default::default(),
        removed_config_files: Vec::new(),
        workspace_dir: None,
        workspace_access: "none".into(),
        compute: json!({}),
        platform_url: "https://berth.example".into(),
        env: vec![],
        secret_files: vec![],
    }
}

#[tokio::test]
async fn the_control_planes_certificate_is_verified() {
    let base = https_control_plane().await;

    // A CA the client does not trust: the start fails on the certificate, nothing is sent.
    let untrusted = ControlPlaneProvisioner::new(ControlPlaneConfig::new(&base, "org-1"))
        .expect("an https:// control plane needs no flag");
    let err = untrusted.start(request()).await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("certificate")
            || msg.contains("unknownissuer")
            || msg.contains("unknown issuer"),
        "{err}"
    );

    // The same server with its CA trusted: the start goes through.
    let mut config = ControlPlaneConfig::new(&base, "org-1");
    config.extra_root_certificates = vec![fixture("ca.pem")];
    let trusted = ControlPlaneProvisioner::new(config).expect("config");
    let started = trusted.start(request()).await.expect("start over TLS");
    assert_eq!(started.instance_id.as_deref(), Some("i-tls"));
}

#[test]
fn plain_http_is_refused_unless_allowed_for_development() {
    let err = ControlPlaneProvisioner::new(ControlPlaneConfig::new("http://127.0.0.1:9", "org"))
        .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
    let allowed = ControlPlaneConfig {
        allow_plain_http: true,
        ..ControlPlaneConfig::new("http://127.0.0.1:9", "org")
    };
    assert!(ControlPlaneProvisioner::new(allowed).is_ok());
}

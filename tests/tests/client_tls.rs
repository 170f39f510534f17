//! The Rust client over `wss://` (feature `client-tls`), through a TLS-terminating proxy in
//! front of a plain server, as production deployments run it: calls, reconnection through
//! TLS, and refusals of certificates it must not trust.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rohrpost::client::{rustls, Client, ClientError, ConnectionState};
use rohrpost::prelude::*;
use serde_json::json;
use tests::TestServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

/// A TLS-terminating proxy with a fresh self-signed certificate for `localhost`.
struct TlsProxy {
    addr: SocketAddr,
    certificate: rustls::pki_types::CertificateDer<'static>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl TlsProxy {
    async fn start(backend: SocketAddr) -> Self {
        let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let certificate = signed.cert.der().clone();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signed.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key.into())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let tasks = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tasks.lock().unwrap().spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut plain = TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            addr,
            certificate,
            connections,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/rohrpost/", self.addr.port())
    }

    /// Drops every proxied connection, as a load balancer restart would.
    fn cut(&self) {
        self.connections.lock().unwrap().abort_all();
    }

    /// A client configuration that trusts this proxy's certificate.
    fn trusting_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn a_client_that_trusts_the_certificate_talks_over_wss_and_reconnects() {
    let server = TestServer::start().await;
    let proxy = TlsProxy::start(server.addr).await;
    let client = Client::builder(proxy.url("localhost"))
        .tls_config(proxy.trusting_config())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("connects over TLS");
    assert_eq!(
        client.call("echo", json!({"over": "tls"})).await,
        Ok(json!({"over": "tls"}))
    );
    let mut state = client.state_changes();
    proxy.cut();
    // The drop is seen, and the client comes back through a new TLS handshake.
    tokio::time::timeout(Duration::from_secs(10), async {
        state
            .wait_for(|state| matches!(state, ConnectionState::Reconnecting { .. }))
            .await
            .unwrap();
        state
            .wait_for(|state| *state == ConnectionState::Connected)
            .await
            .unwrap();
    })
    .await
    .expect("reconnected within 10 s");
    assert_eq!(client.call("echo", json!(2)).await, Ok(json!(2)));
}

#[tokio::test]
async fn certificates_the_client_must_not_trust_are_refused_clearly() {
    let server = TestServer::start().await;
    let proxy = TlsProxy::start(server.addr).await;
    // The default roots (Mozilla's) do not know a self-signed certificate.
    let refused = Client::connect(proxy.url("localhost")).await.unwrap_err();
    let ClientError::Connect { url, reason } = refused else {
        panic!("expected a connect error, got {refused:?}");
    };
    assert_eq!(url, proxy.url("localhost"));
    assert!(
        reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    // A trusted certificate for another name.
    let refused = Client::builder(proxy.url("127.0.0.1"))
        .tls_config(proxy.trusting_config())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ClientError::Connect { reason, .. } if reason.contains("certificate not valid for name")),
        "{refused:?}"
    );
    // Plain WebSocket to the TLS port: the handshake fails, nothing hangs.
    let plain = format!("ws://localhost:{}/rohrpost/", proxy.addr.port());
    assert!(matches!(
        Client::builder(plain)
            .call_timeout(Duration::from_secs(2))
            .connect()
            .await,
        Err(ClientError::Connect { .. })
    ));
}

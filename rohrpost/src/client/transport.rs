//! Opening the socket: `ws://`, or `wss://` with the `client-tls` feature.

#[cfg(feature = "client-tls")]
use std::sync::Arc;

#[cfg(feature = "client-tls")]
use super::rustls;
use super::{ClientBuilder, ClientError};

pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a connection to the settings' URL, within the call timeout, with Nagle's algorithm
/// off (requests are small and want their reply at once).
pub(super) async fn open(settings: &ClientBuilder) -> Result<Socket, ClientError> {
    let (url, timeout) = (settings.url.as_str(), settings.call_timeout);
    let failed = |reason: String| ClientError::Connect {
        url: url.to_owned(),
        reason,
    };
    #[cfg(feature = "client-tls")]
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        settings
            .tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls),
    );
    #[cfg(not(feature = "client-tls"))]
    let connecting = {
        if is_wss(url) {
            return Err(failed(
                "wss:// needs rohrpost's `client-tls` cargo feature".to_owned(),
            ));
        }
        tokio_tungstenite::connect_async_with_config(url, None, true)
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed(format!("no handshake within {timeout:?}"))),
    }
}

pub(super) fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
}

/// rustls with the ring provider and the Mozilla roots: the provider is named, so that an
/// application with another provider compiled in does not make rustls guess (and panic).
#[cfg(feature = "client-tls")]
pub(super) fn default_tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

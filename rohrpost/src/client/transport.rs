//! Opening the socket: `ws://`, or `wss://` with the `client-tls` feature.

#[cfg(feature = "client-tls")]
use std::sync::Arc;

#[cfg(feature = "client-tls")]
use super::rustls;
use super::{ClientBuilder, ClientError};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, HeaderValue, COOKIE};
use tokio_tungstenite::tungstenite::Error as WsError;

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
    let request = request(settings).map_err(failed)?;
    #[cfg(feature = "client-tls")]
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
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
        tokio_tungstenite::connect_async_with_config(request, None, true)
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err(ClientError::Refused {
                url: url.to_owned(),
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(body).into_owned(),
            })
        }
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed(format!("no handshake within {timeout:?}"))),
    }
}

/// The handshake request: the URL, the builder's headers and its cookies.
fn request(settings: &ClientBuilder) -> Result<Request, String> {
    let mut request = settings
        .url
        .as_str()
        .into_client_request()
        .map_err(|error| error.to_string())?;
    let headers = request.headers_mut();
    for (name, value) in &settings.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    if !settings.cookies.is_empty() {
        let cookies = settings
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let value = HeaderValue::from_str(&cookies).map_err(|_| "invalid cookie".to_owned())?;
        headers.append(COOKIE, value);
    }
    Ok(request)
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

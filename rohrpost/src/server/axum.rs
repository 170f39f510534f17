//! Mounting rohrpost in an axum app (cargo feature `axum`): the same handlers, limits,
//! groups and hooks as the standalone server, on the app's router, listener and middleware.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{socket, upgrade};
use super::{ServerBuilder, ServerError, Shared};
use crate::handshake::Handshake;
use crate::handshake::Refusal;
use crate::metrics::Metrics;
use crate::Groups;

/// A rohrpost endpoint to mount at any route of an axum `Router`, built with
/// [`ServerBuilder::endpoint`].
///
/// ```no_run
/// use axum::routing::get;
/// use axum::Router;
/// use rohrpost::prelude::*;
///
/// #[rohrpost_handler("echo")]
/// async fn echo(req: Request) -> Option<Value> { req.data }
///
/// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
/// let rohrpost = Server::builder().endpoint()?;
/// let app = Router::new()
///     .route("/", get(|| async { "the page" }))
///     .route("/rohrpost/", rohrpost.route());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// let shutdown = rohrpost.clone();
/// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
///     .with_graceful_shutdown(async move {
///         rohrpost::server::shutdown_signal().await;
///         shutdown.shutdown().await; // close 1001, let running handlers finish
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
}

impl ServerBuilder {
    /// Builds an [`Endpoint`] to mount in an axum app instead of binding a listener. The
    /// route decides the path (the `path` setting is not used), and axum reads the HTTP
    /// request; `handshake_timeout` bounds the authentication hook and, separately, the
    /// upgrade after it. Without axum's `ConnectInfo`
    /// (`into_make_service_with_connect_info::<SocketAddr>()`), peers show as `0.0.0.0:0`.
    ///
    /// ```
    /// let endpoint = rohrpost::Server::builder().endpoint()?;
    /// let app: axum::Router = axum::Router::new().route("/rohrpost/", endpoint.route());
    /// # Ok::<(), rohrpost::server::ServerError>(())
    /// ```
    pub fn endpoint(self) -> Result<Endpoint, ServerError> {
        Ok(Endpoint {
            shared: self.build()?,
        })
    }
}

impl Endpoint {
    /// The route to mount: `Router::new().route("/rohrpost/", endpoint.route())`.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let endpoint = self.clone();
        get(move |request: Request| {
            let endpoint = endpoint.clone();
            async move { endpoint.upgrade(request).await }
        })
    }

    /// The endpoint's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// The endpoint's groups: clone it to send to groups from anywhere.
    ///
    /// ```
    /// use axum::routing::post;
    /// use rohrpost::prelude::*;
    ///
    /// let endpoint = Server::builder().endpoint()?;
    /// let groups = endpoint.groups().clone();
    /// // A plain HTTP hook (a payment provider, a CI job) that reaches the WebSocket clients:
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/rohrpost/", endpoint.route())
    ///     .route(
    ///         "/hooks/deployed",
    ///         post(move |body: String| async move {
    ///             let news = Message::success("deployed", 0).with_data(json!({ "build": body }));
    ///             let _ = groups.send("ops", &news).await;
    ///         }),
    ///     );
    /// # Ok::<(), rohrpost::server::ServerError>(())
    /// ```
    pub fn groups(&self) -> &Groups {
        &self.shared.groups
    }

    /// Shuts the endpoint's connections down gracefully: each finishes its running handler,
    /// sends its reply and closes with 1001; connections still busy after the shutdown
    /// timeout are dropped. Upgrades that arrive meanwhile get HTTP 503.
    pub async fn shutdown(&self) {
        let timeout = self.shared.config.shutdown_timeout;
        self.shared.connections.shut_down(timeout).await;
    }

    async fn upgrade(&self, mut request: Request) -> Response {
        let Some(key) = websocket_key(&request) else {
            return (
                StatusCode::BAD_REQUEST,
                "a rohrpost endpoint speaks WebSocket: send an upgrade request",
            )
                .into_response();
        };
        if self.shared.connections.shutting_down() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                crate::protocol::SHUTTING_DOWN,
            )
                .into_response();
        }
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |info| info.0);
        let metrics = &self.shared.metrics;
        let open = metrics.open_connection();
        let open_guard = socket::OpenConnection(metrics.clone());
        let over_capacity = open > self.shared.config.max_connections as u64;
        let handshake = Handshake::new(
            request.uri().clone(),
            std::mem::take(request.headers_mut()),
            peer,
        );
        let accepted = match upgrade::check_request(&self.shared, handshake, over_capacity).await {
            Ok(accepted) => accepted,
            Err(Refusal { status, reason }) => return (status, reason).into_response(),
        };
        let upgrade = hyper::upgrade::on(&mut request);
        let shared = self.shared.clone();
        let handshake_timeout = shared.config.handshake_timeout;
        let start = Box::pin(async move {
            let upgraded = match tokio::time::timeout(handshake_timeout, upgrade).await {
                Ok(Ok(upgraded)) => upgraded,
                _ => return None,
            };
            let config = Some(shared.websocket);
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config)
                    .await;
            let halves = futures_util::StreamExt::split(socket);
            Some(socket::start(halves, peer, shared, accepted).await)
        });
        self.shared
            .clone()
            .spawn(socket::connection_task::<TokioIo<hyper::upgrade::Upgraded>>(open_guard, start));
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn websocket_key(request: &Request) -> Option<String> {
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    let upgrade = request.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    if !upgrade {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("metrics", &self.metrics().snapshot())
            .finish_non_exhaustive()
    }
}

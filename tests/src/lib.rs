//! Helpers for the integration tests: a server on a free port and a WebSocket client that
//! speaks JSON.

use std::time::Duration;

mod redis_server;
pub use redis_server::RedisServer;

use futures_util::{SinkExt, StreamExt};
use rohrpost::server::ServerBuilder;
use rohrpost::Server;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in the background on 127.0.0.1 and a free port.
#[derive(Debug)]
pub struct TestServer {
    /// `ws://127.0.0.1:PORT/rohrpost/` (or the configured path).
    pub url: String,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The server's counters.
    pub metrics: rohrpost::server::Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with every `#[rohrpost_handler]` of the test binary.
    pub async fn start() -> Self {
        Self::with(Server::builder()).await
    }

    /// Starts a server from a configured builder.
    pub async fn with(builder: ServerBuilder) -> Self {
        let server = builder.bind("127.0.0.1:0").await.expect("server starts");
        Self::run(server)
    }

    /// Serves a bound server in the background.
    pub fn run(server: Server) -> Self {
        let url = server.url();
        let addr = server.local_addr();
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_until(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            addr,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Connects a client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url).await
    }

    /// Begins a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task ends without panic");
    }
}

/// A WebSocket client for tests.
#[derive(Debug)]
pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw instead of a text frame.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A text frame.
    Text(String),
    /// A close frame: its code and reason, `None` for a close frame without a code.
    Closed(Option<(u16, String)>),
    /// The socket ended without a close frame.
    Ended,
}

impl Client {
    /// Connects to `url`, panicking when the handshake fails.
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("handshake succeeds");
        Self { socket }
    }

    /// Connects with extra request headers (Origin, Cookie…).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("valid URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("handshake failed without an HTTP status: {other}"),
        }
    }

    /// Connects with a 4 KiB receive buffer, so that a client that stops reading fills its
    /// socket quickly (a slow consumer in tests).
    pub async fn connect_small_buffer(url: &str) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = url.into_client_request().expect("valid URL");
        let host = request.uri().host().expect("host").to_owned();
        let port = request.uri().port_u16().expect("port");
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        Self { socket }
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket
            .send(Frame::Text(text.into().into()))
            .await
            .expect("frame sent");
    }

    /// Sends one frame of any kind.
    pub async fn send_frame(&mut self, frame: Frame) {
        self.socket.send(frame).await.expect("frame sent");
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next text frame or close, skipping pings and pongs; fails after [`TIMEOUT`].
    pub async fn next_event(&mut self) -> Event {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("a frame arrives in time");
            match frame {
                Some(Ok(Frame::Text(text))) => return Event::Text(text.to_string()),
                Some(Ok(Frame::Close(frame))) => {
                    return Event::Closed(
                        frame.map(|CloseFrame { code, reason }| {
                            (u16::from(code), reason.to_string())
                        }),
                    )
                }
                Some(Ok(Frame::Binary(_))) => panic!("the server sent a binary frame"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Ended,
            }
        }
    }

    /// The next text frame, as JSON.
    pub async fn recv_json(&mut self) -> Value {
        match self.next_event().await {
            Event::Text(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the server sent invalid JSON {text:?}: {e}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame, as text.
    pub async fn recv_text(&mut self) -> String {
        match self.next_event().await {
            Event::Text(text) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads the next message and checks that it is the `subscription-update` push of
    /// `change` to `group` with `object`, whatever its generated integer id.
    pub async fn expect_push(&mut self, change: &str, group: &str, object: Value) {
        let push = self.recv_json().await;
        assert!(push["id"].is_u64(), "a generated integer id: {push}");
        assert_eq!(
            push,
            serde_json::json!({
                "id": push["id"],
                "type": "subscription-update",
                "data": {"type": change, "group": group, "object": object}
            })
        );
    }

    /// Reads past text frames to the close frame, which must be 1008 for a client that
    /// does not read (`outbound queue full: the client is not reading`).
    pub async fn expect_slow_client_close(&mut self) {
        assert_eq!(
            self.expect_close().await,
            Some((
                1008,
                "outbound queue full: the client is not reading".into()
            ))
        );
    }

    /// Sends `request` and returns the reply.
    pub async fn call(&mut self, request: Value) -> Value {
        self.send_json(request).await;
        self.recv_json().await
    }

    /// Waits for the close frame, skipping text frames; returns its code and reason.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next_event().await {
                Event::Text(_) => continue,
                Event::Closed(frame) => return frame,
                Event::Ended => panic!("the socket ended without a close frame"),
            }
        }
    }

    /// Asserts that no text frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Frame::Text(text)))) =
            tokio::time::timeout(wait, self.socket.next()).await
        {
            panic!("expected no message, got {text}");
        }
    }

    /// Starts the closing handshake from the client's side (code 1000).
    pub async fn start_close(&mut self) {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "done".into(),
        };
        self.socket
            .close(Some(frame))
            .await
            .expect("close frame sent");
    }

    /// Closes the connection from the client's side and drops it.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

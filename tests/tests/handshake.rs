//! The WebSocket handshake over real sockets: the origin allow-list, the connection limit,
//! the async authentication hook and its timeout, and malformed or oversized requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rohrpost::handshake::{Accept, Handshake, Refusal};
use rohrpost::prelude::*;
use serde_json::json;
use tests::{Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

struct User(String);

#[rohrpost_handler("whoami")]
async fn whoami(conn: Connection) -> Option<String> {
    conn.get::<User>().map(|user| user.0.clone())
}

/// A session store the hook has to `.await`, as it would a database.
#[derive(Clone, Default)]
struct Sessions(Arc<tokio::sync::RwLock<std::collections::HashMap<String, String>>>);

impl Sessions {
    async fn user(&self, token: &str) -> Option<String> {
        // Yield, as a network round trip would.
        tokio::task::yield_now().await;
        self.0.read().await.get(token).cloned()
    }
}

async fn authenticate(sessions: Sessions, handshake: Handshake) -> Result<Accept, Refusal> {
    let token = handshake
        .cookie("session")
        .or_else(|| handshake.query("token"))
        .ok_or_else(|| Refusal::unauthorized("log in first"))?;
    match sessions.user(&token).await {
        Some(name) => Ok(Accept::new().with(User(name))),
        None => Err(Refusal::forbidden("unknown session")),
    }
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused_with_403() {
    let builder = Server::builder().allowed_origins(["https://app.example"]);
    let server = TestServer::with(builder).await;
    let metrics = server.metrics.clone();
    assert!(
        Client::connect_with_headers(&server.url, &[("origin", "https://app.example")])
            .await
            .is_ok()
    );
    assert_eq!(
        Client::connect_with_headers(&server.url, &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    // Not a browser: no Origin header, accepted.
    assert!(Client::connect_with_headers(&server.url, &[]).await.is_ok());
    assert_eq!(metrics.snapshot().refused_origin, 1);
}

#[tokio::test]
async fn the_async_authentication_hook_accepts_with_state_or_refuses_with_401_and_403() {
    let sessions = Sessions::default();
    sessions
        .0
        .write()
        .await
        .insert("ada-token".into(), "ada".into());
    let store = sessions.clone();
    let builder =
        Server::builder().authenticate(move |handshake| authenticate(store.clone(), handshake));
    let server = TestServer::with(builder).await;
    let by_query = format!("{}?token=ada-token", server.url);
    let mut client = Client::connect_with_headers(&by_query, &[]).await.unwrap();
    assert_eq!(
        client.call(json!({"id": 1, "type": "whoami"})).await["data"],
        "ada"
    );
    let mut by_cookie =
        Client::connect_with_headers(&server.url, &[("cookie", "theme=dark; session=ada-token")])
            .await
            .unwrap();
    assert_eq!(
        by_cookie.call(json!({"id": 1, "type": "whoami"})).await["data"],
        "ada"
    );
    assert_eq!(
        Client::connect_with_headers(&server.url, &[]).await.err(),
        Some(401)
    );
    let wrong = format!("{}?token=mallory", server.url);
    assert_eq!(
        Client::connect_with_headers(&wrong, &[]).await.err(),
        Some(403)
    );
    // The store changes while the server runs: the hook sees it on the next handshake.
    sessions
        .0
        .write()
        .await
        .insert("mallory".into(), "mallory".into());
    let mut mallory = Client::connect_with_headers(&wrong, &[]).await.unwrap();
    assert_eq!(
        mallory.call(json!({"id": 1, "type": "whoami"})).await["data"],
        "mallory"
    );
    assert_eq!(server.metrics.snapshot().refused_auth, 2);
}

#[tokio::test]
async fn a_slow_authentication_hook_delays_only_its_own_client() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (entering, gate) = (entered.clone(), release.clone());
    let builder = Server::builder().authenticate(move |handshake| {
        let (entering, gate) = (entering.clone(), gate.clone());
        async move {
            if handshake.query("slow").is_some() {
                entering.notify_one();
                gate.notified().await;
            }
            Ok(Accept::new())
        }
    });
    let server = TestServer::with(builder).await;
    let slow_url = format!("{}?slow=1", server.url);
    let slow = tokio::spawn(async move { Client::connect_with_headers(&slow_url, &[]).await });
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("the slow hook started");
    // Other clients connect and are served while the slow hook waits.
    for id in 0..5 {
        let mut client = server.client().await;
        assert_eq!(
            client.call(json!({"id": id, "type": "ping"})).await["type"],
            "pong"
        );
    }
    assert!(!slow.is_finished(), "the slow handshake is still waiting");
    release.notify_one();
    let mut slow = slow.await.unwrap().expect("accepted once the hook answers");
    assert_eq!(
        slow.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_hook_that_outlasts_the_handshake_timeout_gets_503_and_others_go_on() {
    let builder = Server::builder()
        .handshake_timeout(Duration::from_millis(300))
        .authenticate(|handshake| async move {
            if handshake.query("hang").is_some() {
                std::future::pending::<()>().await;
            }
            Ok(Accept::new())
        });
    let server = TestServer::with(builder).await;
    let started = Instant::now();
    let hang = format!("{}?hang=1", server.url);
    assert_eq!(
        Client::connect_with_headers(&hang, &[]).await.err(),
        Some(503)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.metrics.snapshot().auth_timeouts, 1);
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_hook_can_refuse_with_503_while_its_store_is_down() {
    let builder = Server::builder()
        .authenticate(|_| async { Err(Refusal::unavailable("session store unreachable")) });
    let server = TestServer::with(builder).await;
    let (status, body) = raw_handshake(&server, "/rohrpost/", "").await;
    assert_eq!(status, 503);
    assert!(body.ends_with("session store unreachable"), "{body}");
    assert_eq!(server.metrics.snapshot().refused_auth, 1);
}

#[tokio::test]
async fn connections_past_the_maximum_are_refused_with_503() {
    let server = TestServer::with(Server::builder().max_connections(2)).await;
    let first = server.client().await;
    let mut second = server.client().await;
    assert_eq!(
        Client::connect_with_headers(&server.url, &[]).await.err(),
        Some(503)
    );
    assert_eq!(server.metrics.snapshot().refused_capacity, 1);
    // The two are served; when one leaves, there is room again.
    assert_eq!(
        second.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect_with_headers(&server.url, &[]).await {
            Ok(_) => break,
            Err(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("expected room after a close, got {status}"),
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_handshake_requests_get_clear_http_errors() {
    let server = TestServer::start().await;
    // Not HTTP at all.
    let (status, _) = raw_request(&server, b"HELLO THERE\r\n\r\n").await;
    assert_eq!(status, 400);
    // HTTP, but not an upgrade.
    let plain = b"GET /rohrpost/ HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (status, body) = raw_request(&server, plain).await;
    assert_eq!(status, 400);
    assert!(body.to_lowercase().contains("upgrade"), "{body}");
    // A valid upgrade on another path.
    let (status, body) = raw_handshake(&server, "/elsewhere/", "").await;
    assert_eq!(status, 404);
    assert!(body.contains("/elsewhere/"), "{body}");
    // A request head of exactly the limit is read; one byte more is refused.
    let (status, _) = raw_handshake(&server, "/rohrpost/", &cookie_to_fill(0)).await;
    assert_eq!(status, 101);
    let (status, body) = raw_handshake(&server, "/rohrpost/", &cookie_to_fill(1)).await;
    assert_eq!(status, 431, "{body}");
    // More headers than the parser takes.
    let many: String = (0..200).map(|n| format!("x-{n}: y\r\n")).collect();
    let (status, _) = raw_handshake(&server, "/rohrpost/", &many).await;
    assert_eq!(status, 400);
    // The server goes on serving.
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_request_trickled_a_byte_at_a_time_is_read() {
    let server = TestServer::start().await;
    // With CRLF line ends, and with bare LF ones (which HTTP parsers accept too).
    for request in [
        upgrade_request("/rohrpost/", ""),
        upgrade_request("/rohrpost/", "").replace("\r\n", "\n"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        for byte in request.bytes() {
            stream.write_all(&[byte]).await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let mut head = [0; 12];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 101", "{request:?}");
    }
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_handshake_request_is_not_lost() {
    let server = TestServer::start().await;
    let mut bytes = upgrade_request("/rohrpost/", "").into_bytes();
    bytes.extend(masked_text_frame(r#"{"id": 7, "type": "ping"}"#));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // One write: the frame arrives in the same segment as the request.
    stream.write_all(&bytes).await.unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&received).contains("pong") {
        assert!(Instant::now() < deadline, "no pong: {received:?}");
        let mut chunk = [0; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "closed before the reply: {received:?}");
        received.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains(r#""id":7"#), "{text}");
}

/// A WebSocket upgrade request for `path`, with extra header lines.
fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         {extra_headers}\r\n"
    )
}

/// A cookie header that makes the upgrade request head `MAX_REQUEST_HEAD + over` bytes.
fn cookie_to_fill(over: usize) -> String {
    let bare = upgrade_request("/rohrpost/", "cookie: big=\r\n").len();
    let padding = rohrpost::server::MAX_REQUEST_HEAD + over - bare;
    let header = format!("cookie: big={}\r\n", "x".repeat(padding));
    assert_eq!(
        upgrade_request("/rohrpost/", &header).len(),
        rohrpost::server::MAX_REQUEST_HEAD + over
    );
    header
}

/// A client's text frame (clients must mask), for payloads under 126 bytes.
fn masked_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

async fn raw_handshake(server: &TestServer, path: &str, extra_headers: &str) -> (u16, String) {
    raw_request(server, upgrade_request(path, extra_headers).as_bytes()).await
}

/// Sends raw bytes and reads the response head (and, for a refusal, its body): the status
/// code and the text.
async fn raw_request(server: &TestServer, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The server may answer before reading all of an oversized request.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let read = async {
        let mut chunk = [0; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => response.extend_from_slice(&chunk[..read]),
            }
            // A 101 keeps the socket open: stop at the end of its head.
            if response.starts_with(b"HTTP/1.1 101") && response.ends_with(b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the server answers");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

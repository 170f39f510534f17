//! rohrpost mounted in an axum app: the same handlers, limits, groups and hooks as the
//! standalone server, on the app's router and listener, over real sockets.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use rohrpost::handshake::{Accept, Refusal};
use rohrpost::prelude::*;
use rohrpost::server::Endpoint;
use rohrpost::Groups;
use serde_json::json;
use tests::Client;
use tokio::net::TcpListener;

#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

#[rohrpost_handler("join")]
async fn join(conn: Connection, Data(group): Data<String>) -> Result<(), Error> {
    conn.join(&group).await.map_err(Error::internal)
}

/// An app with a page of its own and rohrpost at `/ws`.
async fn app(endpoint: Endpoint) -> SocketAddr {
    let router = Router::new()
        .route("/", get(|| async { "the app's own page" }))
        .route("/ws", endpoint.route());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    addr
}

#[tokio::test]
async fn the_mounted_endpoint_serves_the_same_protocol_beside_the_apps_routes() {
    let groups = Groups::memory();
    let endpoint = Server::builder()
        .groups(groups.clone())
        .max_message_size(1000)
        .allowed_origins(["https://app.example"])
        .endpoint()
        .unwrap();
    let metrics = endpoint.metrics();
    let addr = app(endpoint.clone()).await;
    let url = format!("ws://{addr}/ws");

    let page = tokio::net::TcpStream::connect(addr).await.unwrap();
    drop(page);
    let mut client = Client::connect(&url).await;
    assert_eq!(
        client.call(json!({"id": 0, "type": "ping"})).await,
        json!({"id": 0, "type": "pong"})
    );
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "echo", "data": {"a": 1}}))
            .await,
        json!({"id": 1, "type": "echo", "data": {"a": 1}})
    );
    assert_eq!(
        client.call(json!({"id": 2, "type": "nope"})).await["error"],
        "Unknown message type 'nope'."
    );
    // Groups work through the endpoint's handle.
    client
        .call(json!({"id": 3, "type": "join", "data": "room"}))
        .await;
    let sent = endpoint
        .groups()
        .send("room", &Message::success("news", 9))
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(client.recv_json().await, json!({"id": 9, "type": "news"}));
    // The limits and hooks are the server's.
    assert_eq!(
        Client::connect_with_headers(&url, &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    client.send_text("x".repeat(2000)).await;
    assert_eq!(
        client.expect_close().await,
        Some((1009, "message too big".into()))
    );
    assert_eq!(metrics.snapshot().refused_origin, 1);
}

struct User(String);

#[rohrpost_handler("whoami")]
async fn whoami(conn: Connection) -> Option<String> {
    conn.get::<User>().map(|user| user.0.clone())
}

#[tokio::test]
async fn the_async_authentication_hook_runs_on_the_mounted_endpoint() {
    let endpoint = Server::builder()
        .handshake_timeout(std::time::Duration::from_millis(300))
        .authenticate(|handshake| async move {
            // Stands in for a session lookup.
            tokio::task::yield_now().await;
            match handshake.query("token").as_deref() {
                Some("ada-token") => Ok(Accept::new().with(User("ada".into()))),
                Some("hang") => std::future::pending().await,
                Some(_) => Err(Refusal::forbidden("unknown session")),
                None => Err(Refusal::unauthorized("log in first")),
            }
        })
        .endpoint()
        .unwrap();
    let metrics = endpoint.metrics();
    let addr = app(endpoint).await;
    let url = format!("ws://{addr}/ws");
    let mut ada = Client::connect(&format!("{url}?token=ada-token")).await;
    assert_eq!(
        ada.call(json!({"id": 1, "type": "whoami"})).await["data"],
        "ada"
    );
    let refused = |query: &'static str| {
        let url = format!("{url}{query}");
        async move { Client::connect_with_headers(&url, &[]).await.err() }
    };
    assert_eq!(refused("").await, Some(401));
    assert_eq!(refused("?token=mallory").await, Some(403));
    assert_eq!(refused("?token=hang").await, Some(503));
    assert_eq!(metrics.snapshot().refused_auth, 2);
    assert_eq!(metrics.snapshot().auth_timeouts, 1);
    // The hung handshake holds no connection slot.
    assert_eq!(metrics.snapshot().connections_open, 1);
}

#[tokio::test]
async fn a_plain_request_to_the_endpoint_is_refused_and_the_app_still_answers() {
    let endpoint = Server::builder().endpoint().unwrap();
    let addr = app(endpoint).await;
    let http = |path: &str| {
        let path = path.to_owned();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    assert!(http("/ws").await.starts_with("HTTP/1.1 400"));
    let page = http("/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.ends_with("the app's own page"),
        "{page}"
    );
}

#[tokio::test]
async fn endpoint_shutdown_closes_its_connections_with_1001() {
    let endpoint = Server::builder().endpoint().unwrap();
    let addr = app(endpoint.clone()).await;
    let mut client = Client::connect(&format!("ws://{addr}/ws")).await;
    assert_eq!(
        client.call(json!({"id": 0, "type": "ping"})).await["type"],
        "pong"
    );
    endpoint.shutdown().await;
    assert_eq!(
        client.expect_close().await,
        Some((1001, "server shutting down".into()))
    );
    assert_eq!(endpoint.metrics().snapshot().connections_open, 0);
}

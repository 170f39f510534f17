//! Cross-site WebSocket hijacking, over real sockets: pages of other origins are refused by
//! default, in the standalone server and in the axum endpoint; the server's own origin,
//! programs without `Origin`, listed origins and wildcard subdomains pass.

use std::net::SocketAddr;

use rohrpost::server::{ForwardedHost, ServerBuilder};
use rohrpost::Groups;
use rohrpost_todo as app;
use tests::{Client, TestServer};
use tokio::net::TcpListener;

/// The handshake's HTTP status: 101 when accepted.
async fn status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match Client::connect_with_headers(url, headers).await {
        Ok(client) => {
            client.close().await;
            101
        }
        Err(status) => status,
    }
}

async fn demo_config(dir: &tempfile::TempDir) -> app::Config {
    app::Config::local(app::sqlite_in(dir.path()))
}

#[tokio::test]
async fn the_todo_demo_refuses_other_sites_pages_and_serves_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = app::server(&demo_config(&dir).await, Groups::memory())
        .await
        .expect("demo starts");
    let server = TestServer::run(server);
    let own = format!("http://{}", server.addr);
    assert_eq!(
        status(&server.url, &[("origin", "http://evil.example")]).await,
        403
    );
    assert_eq!(status(&server.url, &[("origin", own.as_str())]).await, 101);
    assert_eq!(status(&server.url, &[]).await, 101, "no Origin: a program");
    assert_eq!(server.metrics.snapshot().refused_origin, 1);
}

async fn server_with(builder: ServerBuilder) -> TestServer {
    TestServer::with(builder).await
}

#[tokio::test]
async fn listed_origins_wildcard_subdomains_and_any_origin_pass() {
    let listed = server_with(
        rohrpost::Server::builder()
            .allowed_origins(["https://app.example", "https://*.example.com"]),
    )
    .await;
    for (origin, expected) in [
        ("https://app.example", 101),
        ("https://eu.example.com", 101),
        ("https://example.com", 403),
        ("https://evil.example", 403),
    ] {
        assert_eq!(
            status(&listed.url, &[("origin", origin)]).await,
            expected,
            "{origin}"
        );
    }
    let any = server_with(rohrpost::Server::builder().allow_any_origin()).await;
    assert_eq!(
        status(&any.url, &[("origin", "https://evil.example")]).await,
        101
    );
}

#[tokio::test]
async fn an_allowed_origin_that_is_not_an_origin_fails_at_bind() {
    let error = rohrpost::Server::builder()
        .allowed_origins(["app.example"])
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("\"app.example\""), "{error}");
}

#[tokio::test]
async fn behind_a_proxy_the_public_host_counts_only_when_configured() {
    let headers = [
        ("origin", "https://public.example"),
        ("x-forwarded-host", "public.example"),
    ];
    let plain = server_with(rohrpost::Server::builder()).await;
    assert_eq!(status(&plain.url, &headers).await, 403);
    let behind =
        server_with(rohrpost::Server::builder().forwarded_host(ForwardedHost::XForwardedHost))
            .await;
    assert_eq!(status(&behind.url, &headers).await, 101);
}

#[tokio::test]
async fn the_axum_endpoint_checks_origins_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _endpoint) = app::router(&demo_config(&dir).await, Groups::memory())
        .await
        .expect("demo router");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    let url = format!("ws://{addr}/rohrpost/");
    let own = format!("http://{addr}");
    assert_eq!(
        status(&url, &[("origin", "http://evil.example")]).await,
        403
    );
    assert_eq!(status(&url, &[("origin", own.as_str())]).await, 101);
    assert_eq!(status(&url, &[]).await, 101);
}

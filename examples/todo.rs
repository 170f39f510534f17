//! The todo demo: `cargo run --example todo`, then open http://127.0.0.1:8000/ in a browser
//! (two tabs show each other's changes live), or a WebSocket to
//! `ws://127.0.0.1:8000/rohrpost/`.
//!
//! ```text
//! {"id": 1, "type": "subscribe", "auth_jwt": "hunter2", "data": {"type": "todo", "id": 1}}
//! {"id": 2, "type": "todo.create", "data": {"title": "milk"}}
//! {"id": 3, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}
//! {"id": 4, "type": "todo.delete", "data": {"id": 1}}
//! ```
//! Settings: `--addr`/`ROHRPOST_ADDR` (127.0.0.1:8000), `--token`/`ROHRPOST_TOKEN`
//! (hunter2), `--database-url`/`DATABASE_URL` (an SQLite file `todo.sqlite` here),
//! `--redis-url`/`ROHRPOST_REDIS_URL` (none: groups in this process only).

#[path = "todo/app.rs"]
#[allow(dead_code)] // the standalone `server` is for the tests
mod app;

use clap::Parser;

#[path = "common/logging.rs"]
mod logging;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init();
    let config = app::Config::parse();
    let groups = config.groups().await?;
    let (router, endpoint) = app::router(&config, groups).await?;
    let listener = tokio::net::TcpListener::bind(config.addr.as_str()).await?;
    let addr = listener.local_addr()?;
    println!("rohrpost todo demo: ws://{addr}/rohrpost/ (the page: http://{addr}/)");
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            rohrpost::shutdown_signal().await;
            endpoint.shutdown().await;
        })
        .await?;
    Ok(())
}

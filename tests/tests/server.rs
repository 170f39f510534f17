//! The server: path, limits, frames, ordering, closing and shutdown, over real sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rohrpost::prelude::*;
use rohrpost::server::ServerBuilder;
use rohrpost::SendError;
use serde_json::json;
use tests::{Client, Event, TestServer};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::Message as Frame;

#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

#[rohrpost_handler("sleep")]
async fn sleep(Data(millis): Data<u64>) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[rohrpost_handler("bye")]
async fn bye(conn: Connection) -> Result<&'static str, Error> {
    conn.send(Message::success("last words", 1))
        .await
        .map_err(Error::internal)?;
    conn.close_with(4000, "bye").map_err(Error::internal)?;
    let after = conn.send(Message::success("too late", 2)).await;
    assert_eq!(after, Err(SendError::Closed));
    assert_eq!(
        conn.close_with(1005, "reserved"),
        Err(SendError::InvalidCloseCode(1005))
    );
    // A reply after the close is refused too, not sent behind the close frame.
    Ok("never sent")
}

static REFUSED: AtomicUsize = AtomicUsize::new(0);
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Sends big messages, waiting for room, until the client is found not to read.
#[rohrpost_handler("flood")]
async fn flood(conn: Connection) -> NoReply {
    let chunk = "x".repeat(16 * 1024);
    for n in 0..100_000 {
        let message = Message::success("flood", n).with_data(chunk.as_str());
        match conn.send(message).await {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::SeqCst);
            }
            // Whichever notices first: `send` waiting for room, or the writer waiting for
            // the socket (then the connection is already closed).
            Err(SendError::QueueFull(_) | SendError::Closed) => {
                REFUSED.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Err(other) => panic!("unexpected send error {other}"),
        }
    }
    NoReply
}

/// Sends `data` small messages in a burst, waiting for room: a reading client gets them all.
#[rohrpost_handler("burst")]
async fn burst(conn: Connection, Data(count): Data<u64>) -> Result<u64, Error> {
    for n in 0..count {
        conn.send(Message::success("burst", n))
            .await
            .map_err(Error::internal)?;
    }
    Ok(count)
}

/// Sends without waiting: a queue of eight takes a burst of up to sixteen (twice its
/// length, within the write timeout), and the seventeenth message is refused.
#[rohrpost_handler("try_burst")]
async fn try_burst(conn: Connection) -> Result<(), Error> {
    for n in 0..17 {
        if let Err(error) = conn.try_send(Message::success("try_burst", n)) {
            assert_eq!(n, 16);
            assert_eq!(error, SendError::QueueFull(8));
            return Err(Error::internal(error));
        }
    }
    Ok(())
}

#[tokio::test]
async fn other_paths_are_refused_with_404() {
    let server = TestServer::start().await;
    let other = format!("ws://{}/other/", server.addr);
    match tokio_tungstenite::connect_async(&other).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        Err(other) => panic!("expected HTTP 404, got {other}"),
        Ok(_) => panic!("expected HTTP 404, got a WebSocket"),
    }
    // The configured path, with a query string, is served.
    let mut client = Client::connect(&format!("{}?token=abc", server.url)).await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn configured_path_is_served() {
    let server = TestServer::with(Server::builder().path("/ws")).await;
    assert!(server.url.ends_with("/ws"));
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
    let default = format!("ws://{}/rohrpost/", server.addr);
    match tokio_tungstenite::connect_async(&default).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        Err(other) => panic!("expected HTTP 404, got {other}"),
        Ok(_) => panic!("expected HTTP 404, got a WebSocket"),
    }
}

#[tokio::test]
async fn invalid_path_setting_is_a_start_up_error() {
    let error = Server::builder()
        .path("rohrpost/")
        .bind("127.0.0.1:0")
        .await
        .expect_err("a path without a leading slash is refused");
    assert_eq!(
        error.to_string(),
        "invalid server setting: the path must start with '/', got \"rohrpost/\""
    );
}

#[tokio::test]
async fn message_over_the_size_limit_closes_with_1009() {
    let server = TestServer::with(Server::builder().max_message_size(1000)).await;
    let mut client = server.client().await;
    let fits = json!({"id": 1, "type": "echo", "data": "y".repeat(900)}).to_string();
    assert!(fits.len() <= 1000);
    client.send_text(fits).await;
    assert_eq!(
        client.recv_json().await["data"].as_str().unwrap().len(),
        900
    );
    let too_big = json!({"id": 2, "type": "echo", "data": "y".repeat(2000)}).to_string();
    client.send_text(too_big).await;
    assert_eq!(
        client.expect_close().await,
        Some((1009, "message too big".into()))
    );
}

#[tokio::test]
async fn default_size_limit_is_one_mebibyte() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let half = "z".repeat(512 * 1024);
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "echo", "data": half}))
            .await["data"]
            .as_str()
            .map(str::len),
        Some(512 * 1024)
    );
    let over = "z".repeat(rohrpost::server::DEFAULT_MAX_MESSAGE_SIZE + 1);
    client.send_text(over).await;
    assert_eq!(
        client.expect_close().await,
        Some((1009, "message too big".into()))
    );
}

#[tokio::test]
async fn binary_frame_gets_error_and_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .send_frame(Frame::Binary(br#"{"id":1,"type":"ping"}"#.to_vec().into()))
        .await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Binary frames are not supported: send each message as one JSON text frame."})
    );
    assert_eq!(
        client.call(json!({"id": 2, "type": "ping"})).await,
        json!({"id": 2, "type": "pong"})
    );
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let frame = RawFrame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(OpData::Text),
        true,
    );
    client.send_frame(Frame::Frame(frame)).await;
    assert_eq!(
        client.expect_close().await,
        Some((1007, "text frame is not valid UTF-8".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_read_is_closed_with_1008_and_gets_what_was_accepted() {
    let builder = Server::builder()
        .outbound_queue(8)
        .write_timeout(Duration::from_millis(300));
    let server = TestServer::with(builder).await;
    let mut client = server.client().await;
    client.send_json(json!({"id": 1, "type": "flood"})).await;
    // Not reading: the socket buffers fill, then the queue; after the write timeout the
    // server gives up on this client.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The handler is either told (its `send` fails) or dropped with the connection.
    assert!(REFUSED.load(Ordering::SeqCst) <= 1);
    let mut received = 0;
    let close = loop {
        match client.next_event().await {
            Event::Text(_) => received += 1,
            Event::Closed(frame) => break frame,
            Event::Ended => panic!("the socket ended without a close frame"),
        }
    };
    assert_eq!(
        close,
        Some((
            1008,
            "outbound queue full: the client is not reading".into()
        ))
    );
    // Everything that `send` accepted was delivered, in full, before the close frame.
    assert_eq!(received, QUEUED.load(Ordering::SeqCst));
    assert!(received > 8, "the socket buffers took more than the queue");
    assert!(received < 100_000);
}

#[tokio::test]
async fn burst_larger_than_the_queue_reaches_a_reading_client() {
    let server = TestServer::with(Server::builder().outbound_queue(8)).await;
    let mut client = server.client().await;
    client
        .send_json(json!({"id": "b", "type": "burst", "data": 5000}))
        .await;
    for n in 0..5000 {
        assert_eq!(client.recv_json().await, json!({"id": n, "type": "burst"}));
    }
    assert_eq!(
        client.recv_json().await,
        json!({"id": "b", "type": "burst", "data": 5000})
    );
}

#[tokio::test]
async fn try_send_past_twice_the_queue_fails_at_once_and_closes_with_1008() {
    let server = TestServer::with(Server::builder().outbound_queue(8)).await;
    let mut client = server.client().await;
    client
        .send_json(json!({"id": 1, "type": "try_burst"}))
        .await;
    for n in 0..16 {
        assert_eq!(
            client.recv_json().await,
            json!({"id": n, "type": "try_burst"})
        );
    }
    assert_eq!(
        client.expect_close().await,
        Some((
            1008,
            "outbound queue full: the client is not reading".into()
        ))
    );
}

#[tokio::test]
async fn close_started_by_the_client_is_answered() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
    client.start_close().await;
    assert_eq!(
        client.next_event().await,
        Event::Closed(Some((1000, "done".into())))
    );
}

#[tokio::test]
async fn handshake_not_completed_in_time_is_dropped() {
    use tokio::io::AsyncReadExt;
    let builder = Server::builder().handshake_timeout(Duration::from_millis(200));
    let server = TestServer::with(builder).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
        .await
        .expect("the server hangs up within the handshake timeout");
    assert_eq!(read.unwrap_or(0), 0, "connection closed without a byte");
}

#[tokio::test]
async fn messages_of_one_connection_are_handled_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let delays = [80, 0, 40, 0, 10, 0];
    for (id, millis) in delays.iter().enumerate() {
        client
            .send_json(json!({"id": id, "type": "sleep", "data": millis}))
            .await;
    }
    for (id, millis) in delays.iter().enumerate() {
        assert_eq!(
            client.recv_json().await,
            json!({"id": id, "type": "sleep", "data": millis})
        );
    }
}

#[tokio::test]
async fn connections_are_served_concurrently() {
    let server = TestServer::start().await;
    let mut slow = server.client().await;
    slow.send_json(json!({"id": 1, "type": "sleep", "data": 10_000}))
        .await;
    // While one connection's handler sleeps, 50 others are answered.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..50 {
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            for i in 0..20 {
                let reply = client
                    .call(json!({"id": i, "type": "echo", "data": n}))
                    .await;
                assert_eq!(reply, json!({"id": i, "type": "echo", "data": n}));
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the others did not wait for the sleeper"
    );
}

#[tokio::test]
async fn handler_close_delivers_queued_messages_first() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.send_json(json!({"id": 1, "type": "bye"})).await;
    assert_eq!(
        client.recv_json().await,
        json!({"id": 1, "type": "last words"})
    );
    // Neither the message sent after the close nor the handler's reply follows it.
    assert_eq!(
        client.next_event().await,
        Event::Closed(Some((4000, "bye".into())))
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_running_handlers_reply_then_closes_with_1001() {
    let mut server = TestServer::start().await;
    let mut busy = server.client().await;
    let mut idle = server.client().await;
    busy.send_json(json!({"id": 1, "type": "sleep", "data": 300}))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.begin_shutdown();
    assert_eq!(
        busy.recv_json().await,
        json!({"id": 1, "type": "sleep", "data": 300})
    );
    assert_eq!(
        busy.expect_close().await,
        Some((1001, "server shutting down".into()))
    );
    assert_eq!(
        idle.expect_close().await,
        Some((1001, "server shutting down".into()))
    );
    let url = server.url.clone();
    server.shutdown().await;
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_drops_handlers_still_running_after_the_timeout() {
    let server =
        TestServer::with(Server::builder().shutdown_timeout(Duration::from_millis(200))).await;
    let mut stuck = server.client().await;
    stuck
        .send_json(json!({"id": 1, "type": "sleep", "data": 60_000}))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stuck.next_event().await, Event::Ended);
}

#[tokio::test]
async fn every_setting_out_of_range_is_refused_at_bind_naming_it() {
    let zero = Duration::ZERO;
    let cases: Vec<(ServerBuilder, &str)> = vec![
        (
            Server::builder().path("rohrpost/"),
            "path must start with '/'",
        ),
        (Server::builder().rate_limit(0.0, 10), "rate limit"),
        (Server::builder().rate_limit(10.0, 0), "rate limit"),
        (Server::builder().ping(zero, Duration::from_secs(1)), "ping"),
        (Server::builder().outbound_queue(0), "outbound_queue"),
        (Server::builder().reply_backlog(0), "reply_backlog"),
        (Server::builder().max_message_size(0), "max_message_size"),
        (
            Server::builder().handshake_timeout(zero),
            "handshake_timeout",
        ),
        (Server::builder().write_timeout(zero), "write_timeout"),
        (Server::builder().close_timeout(zero), "close_timeout"),
        (Server::builder().handler_timeout(zero), "handler_timeout"),
    ];
    for (builder, named) in cases {
        match builder.bind("127.0.0.1:0").await {
            Err(rohrpost::server::ServerError::InvalidConfig(message)) => {
                assert!(message.contains(named), "{message:?} should name {named:?}")
            }
            Err(other) => panic!("expected InvalidConfig naming {named:?}, got {other}"),
            Ok(_) => panic!("a setting breaking {named:?} was accepted"),
        }
    }
}

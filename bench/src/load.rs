//! The load generators: round trips, idle connections, fan-out, and a mass reconnection.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

pub(crate) type Socket = WebSocketStream<TcpStream>;

/// A TCP connection from 127.0.0.`n` (spreading source addresses past one address's ports).
pub(crate) async fn tcp(addr: SocketAddr, n: usize) -> TcpStream {
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 253) as u8));
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind a loopback source address");
    let stream = socket.connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Connects from 127.0.0.`n` (spreading source addresses past one address's ports).
pub(crate) async fn connect(addr: SocketAddr, path: &str, n: usize) -> Socket {
    let stream = tcp(addr, n).await;
    let url = format!("ws://{addr}{path}");
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    socket
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What one round-trip run measured.
pub(crate) struct RttResult {
    pub messages: u64,
    pub elapsed: Duration,
    /// Round-trip latencies, in microseconds.
    pub latency: Histogram<u64>,
}

impl RttResult {
    pub(crate) fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// How a server is asked the same `ping {"x":1}` and answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// rohrpost's `{"id","type":"ping","data":{"x":1}}` at `/rohrpost/`.
    Rohrpost,
    /// The same frame at `/`, for the hand-written servers.
    Plain,
    /// A socket.io event with an ack: `421["ping",{"x":1}]`.
    Socketio,
    /// JSON-RPC 2.0: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1}}`.
    JsonRpc,
}

impl Protocol {
    fn request(self) -> &'static [u8] {
        match self {
            Protocol::Rohrpost | Protocol::Plain => br#"{"id":1,"type":"ping","data":{"x":1}}"#,
            Protocol::Socketio => br#"421["ping",{"x":1}]"#,
            Protocol::JsonRpc => br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1}}"#,
        }
    }

    async fn connect(self, addr: SocketAddr, n: usize) -> std::io::Result<crate::wire::RawSocket> {
        match self {
            Protocol::Rohrpost => crate::wire::RawSocket::connect(addr, "/rohrpost/", n).await,
            Protocol::Plain | Protocol::JsonRpc => {
                crate::wire::RawSocket::connect(addr, "/", n).await
            }
            Protocol::Socketio => crate::wire::RawSocket::connect_socketio(addr, n).await,
        }
    }
}

/// `connections` sockets, each keeping `in_flight` pings outstanding for `duration`.
pub(crate) async fn rtt(
    addr: SocketAddr,
    protocol: Protocol,
    connections: usize,
    in_flight: usize,
    duration: Duration,
) -> RttResult {
    let mut sockets = Vec::with_capacity(connections);
    for n in 0..connections {
        let socket = protocol
            .connect(addr, n)
            .await
            .expect("WebSocket handshake");
        sockets.push(socket);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let request = crate::wire::masked_text(protocol.request());
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(pinger(socket, request.clone(), in_flight, deadline)))
        .collect();
    let mut result = RttResult {
        messages: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (messages, latency) = task.await.expect("pinger");
        result.messages += messages;
        result.latency.add(latency).expect("same bounds");
    }
    result.elapsed = started.elapsed();
    result
}

/// Keeps `in_flight` pings outstanding on one connection until `deadline`: reads every
/// reply that has arrived, then writes their replacements in one write. The ping is one
/// pre-masked frame (the same for every request: replies are matched in order), copied,
/// and replies are counted by their headers, so the generator spends a fraction of what
/// the server does per message.
async fn pinger(
    mut socket: crate::wire::RawSocket,
    ping: Vec<u8>,
    in_flight: usize,
    deadline: Instant,
) -> (u64, Histogram<u64>) {
    let mut latency = histogram();
    let mut sent_at = VecDeque::with_capacity(in_flight);
    let mut messages = 0;
    let mut out = Vec::with_capacity(ping.len() * in_flight);
    let now = Instant::now();
    for _ in 0..in_flight {
        sent_at.push_back(now);
        out.extend_from_slice(&ping);
    }
    socket.write(&out).await.expect("send");
    while let Ok(replies) = socket.read_frames().await {
        let now = Instant::now();
        for _ in 0..replies {
            let Some(sent) = sent_at.pop_front() else {
                break;
            };
            let _ = latency.record(now.duration_since(sent).as_micros().max(1) as u64);
            messages += 1;
        }
        if now < deadline {
            out.clear();
            for _ in 0..replies {
                sent_at.push_back(now);
                out.extend_from_slice(&ping);
            }
            socket.write(&out).await.expect("send");
        } else if sent_at.is_empty() {
            break;
        }
    }
    socket.close().await;
    (messages, latency)
}

/// Opens `count` connections, each proving itself with a ping; returns them (to hold).
pub(crate) async fn open_idle(
    addr: SocketAddr,
    path: &str,
    count: usize,
    progress: &indicatif::ProgressBar,
) -> Vec<Socket> {
    let limit = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let limit = limit.clone();
            let path = path.to_owned();
            let progress = progress.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let mut socket = connect(addr, &path, n).await;
                socket
                    .send(Frame::Text(format!(r#"{{"id":{n},"type":"ping"}}"#).into()))
                    .await
                    .expect("ping");
                loop {
                    match socket.next().await {
                        Some(Ok(frame)) if frame.is_text() => break,
                        Some(Ok(_)) => continue,
                        other => panic!("connection {n} failed: {other:?}"),
                    }
                }
                progress.inc(1);
                socket
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(count);
    for task in tasks {
        sockets.push(task.await.expect("connection task"));
    }
    sockets
}

/// What a fan-out run measured.
pub(crate) struct FanoutResult {
    pub deliveries: u64,
    pub elapsed: Duration,
    /// Update sent → one subscriber has it, in microseconds.
    pub delivery: Histogram<u64>,
    /// Update sent → every subscriber has it, in microseconds.
    pub complete: Histogram<u64>,
    /// The server's CPU time while the updates went out (not while the subscribers
    /// connected).
    pub server_cpu: Duration,
    /// The part of `server_cpu` spent in user space.
    pub server_user: Duration,
    /// The generator's own CPU time over the same span.
    pub generator_cpu: Duration,
    /// How often the server's threads went to sleep over the same span.
    pub server_sleeps: u64,
    /// How often the generator's threads went to sleep over the same span.
    pub generator_sleeps: u64,
}

impl FanoutResult {
    /// The share of one core the generator used while the updates went out: above
    /// [`GENERATOR_LIMIT`](crate::GENERATOR_LIMIT) the figures are the generator's.
    pub(crate) fn generator_share(&self) -> f64 {
        self.generator_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// How many subscribers and updates a [`fanout`] run has, and how it paces them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutShape {
    pub(crate) subscribers: usize,
    pub(crate) updates: usize,
    /// Updates not yet delivered to everyone at most.
    pub(crate) window: usize,
    /// How the subscribers' reading thread waits (see `wire::receive_all`).
    pub(crate) pace: Option<Duration>,
}

/// `subscribers` clients (on `subscribe_to`) subscribe to todo 1; one client (on
/// `update_on`) creates it and sends `updates` renames, at most `window` of them not yet
/// delivered to everyone.
pub(crate) async fn fanout(
    subscribe_to: SocketAddr,
    update_on: SocketAddr,
    shape: FanoutShape,
    progress: &indicatif::ProgressBar,
    server_cpu: &dyn Fn() -> (Duration, Duration, u64),
) -> FanoutResult {
    let FanoutShape {
        subscribers,
        updates,
        window,
        pace,
    } = shape;
    let mut updater = connect(update_on, "/rohrpost/", 0).await;
    call(
        &mut updater,
        json!({"id": 0, "type": "todo.create", "data": {"title": "bench"}}),
    )
    .await;
    let (mut updater, mut replies) = updater.split();
    // The replies to the updates are not measured, only read.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });

    let epoch = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..updates).map(|_| AtomicU64::new(0)).collect());
    let remaining: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..updates)
            .map(|_| AtomicUsize::new(subscribers))
            .collect(),
    );
    let completed = Arc::new(tokio::sync::Notify::new());
    let done_updates = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(std::sync::Mutex::new(histogram()));

    let mut sockets = Vec::with_capacity(subscribers);
    let subscribe = crate::wire::masked_text(
        br#"{"id":1,"type":"subscribe","auth_jwt":"hunter2","data":{"type":"todo","id":1}}"#,
    );
    for n in 0..subscribers {
        // The subscribers count and read pushes by their frame headers (the generator's
        // receiving side must cost less than the server's sending side).
        let mut socket = crate::wire::RawSocket::connect(subscribe_to, "/rohrpost/", n + 1)
            .await
            .expect("WebSocket handshake");
        socket.write(&subscribe).await.expect("subscribe");
        let mut reply = Vec::new();
        socket
            .read_each(|payload| reply = payload.to_vec())
            .await
            .expect("the subscribe reply");
        assert!(
            reply.windows(16).any(|w| w == br#""group":"todo-1""#),
            "subscribed: {}",
            String::from_utf8_lossy(&reply)
        );
        sockets.push(socket);
    }
    // Every subscriber is read on one thread through one epoll set: one read per socket
    // each time it has data, no task per subscriber (see `wire::receive_all`).
    let receiving = {
        let (sent_at, remaining) = (sent_at.clone(), remaining.clone());
        let (completed, done_updates) = (completed.clone(), done_updates.clone());
        let complete = complete.clone();
        tokio::task::spawn_blocking(move || {
            let mut delivery = histogram();
            let mut seen = vec![0; subscribers];
            let mut deliveries = 0u64;
            if updates > 0 {
                let unread = crate::wire::receive_all(
                    sockets,
                    Duration::from_secs(60),
                    pace,
                    |n, payload| {
                        let Some(k) = update_number(payload).filter(|&k| k < updates) else {
                            return false;
                        };
                        let now = epoch.elapsed().as_micros() as u64;
                        let sent = sent_at[k].load(Ordering::Acquire);
                        let _ = delivery.record(now.saturating_sub(sent).max(1));
                        deliveries += 1;
                        if remaining[k].fetch_sub(1, Ordering::AcqRel) == 1 {
                            let _ = complete
                                .lock()
                                .unwrap()
                                .record(now.saturating_sub(sent).max(1));
                            done_updates.fetch_add(1, Ordering::AcqRel);
                            completed.notify_one();
                        }
                        seen[n] += 1;
                        seen[n] >= updates
                    },
                )
                .expect("reading the pushes");
                assert_eq!(unread, 0, "subscribers closed before every push arrived");
            }
            (deliveries, delivery)
        })
    };

    let started = Instant::now();
    let (server_before, generator_before) = (server_cpu(), crate::process::own_cpu_time());
    let generator_sleeps_before = crate::process::own_sleeps();
    for k in 0..updates {
        while k >= done_updates.load(Ordering::Acquire) + window {
            completed.notified().await;
        }
        sent_at[k].store(epoch.elapsed().as_micros() as u64, Ordering::Release);
        let update = json!({"id": k + 2, "type": "todo.update", "data": {"id": 1, "title": format!("u{k}")}});
        updater
            .send(Frame::Text(update.to_string().into()))
            .await
            .expect("update");
        progress.inc(1);
    }
    let mut result = FanoutResult {
        deliveries: 0,
        elapsed: Duration::ZERO,
        delivery: histogram(),
        complete: histogram(),
        server_cpu: Duration::ZERO,
        server_user: Duration::ZERO,
        server_sleeps: 0,
        generator_sleeps: 0,
        generator_cpu: Duration::ZERO,
    };
    let (deliveries, delivery) = receiving.await.expect("the receiving thread");
    let server_after = server_cpu();
    result.server_cpu = server_after.0 - server_before.0;
    result.server_user = server_after.1 - server_before.1;
    result.server_sleeps = server_after.2.saturating_sub(server_before.2);
    result.generator_cpu = crate::process::own_cpu_time() - generator_before;
    result.generator_sleeps = crate::process::own_sleeps().saturating_sub(generator_sleeps_before);
    result.deliveries = deliveries;
    result.delivery = delivery;
    result.elapsed = started.elapsed();
    result.complete = complete.lock().unwrap().clone();
    let _ = updater.close().await;
    drain.abort();
    result
}

/// The `k` of a push whose title is `u<k>`.
fn update_number(payload: &[u8]) -> Option<usize> {
    const TITLE: &[u8] = br#""title":"u"#;
    let start = payload.windows(TITLE.len()).position(|w| w == TITLE)? + TITLE.len();
    let rest = &payload[start..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn call(socket: &mut Socket, request: Value) -> Value {
    socket
        .send(Frame::Text(request.to_string().into()))
        .await
        .expect("send");
    loop {
        match socket.next().await {
            Some(Ok(Frame::Text(text))) => return serde_json::from_str(&text).expect("JSON reply"),
            Some(Ok(_)) => continue,
            other => panic!("no reply: {other:?}"),
        }
    }
}

/// What one mass reconnection measured.
pub(crate) struct ResumeResult {
    /// From the first reconnection to the last client being current.
    pub elapsed: Duration,
    /// The load generator's CPU time during the reconnection.
    pub generator_cpu: Duration,
    /// Per client, from its reconnection to being current, in microseconds.
    pub current: Histogram<u64>,
    /// Clients whose missed updates were replayed (the rest refetched the list).
    pub recovered: usize,
    /// Redis commands served during the reconnection, by name, when there is a Redis.
    pub redis_commands: Vec<(String, u64)>,
}

/// `clients` subscribers of todo 1 (among `rows` todos) drop their connections, `missed`
/// updates happen, and all come back at once: each subscribes again from its position and
/// is current once the replay and the reply are in, or, when the server cannot replay,
/// once it has fetched the list again (what a client without history must do).
pub(crate) async fn resume(
    addr: SocketAddr,
    clients: usize,
    missed: usize,
    rows: usize,
    redis: Option<&crate::process::RedisProcess>,
    progress: &indicatif::ProgressBar,
) -> ResumeResult {
    let mut editor = connect(addr, "/rohrpost/", 0).await;
    for n in 0..rows {
        call(
            &mut editor,
            json!({"id": n, "type": "todo.create", "data": {"title": format!("row {n}")}}),
        )
        .await;
    }
    let mut positions = Vec::with_capacity(clients);
    for n in 0..clients {
        let mut socket = connect(addr, "/rohrpost/", n + 1).await;
        let reply = call(
            &mut socket,
            json!({"id": 1, "type": "subscribe", "auth_jwt": "hunter2", "data": {"type": "todo", "id": 1, "since": null}}),
        )
        .await;
        let data = &reply["data"];
        // Without history there is no position: the client subscribes again as a plain one
        // and refetches (a position of nulls would be refused, and it would not join).
        positions.push(
            data.get("offset")
                .filter(|offset| !offset.is_null())
                .map(|_| json!({"offset": data["offset"], "epoch": data["epoch"]})),
        );
        let _ = socket.close(None).await;
    }
    for k in 0..missed {
        let update =
            json!({"id": k, "type": "todo.update", "data": {"id": 1, "title": format!("u{k}")}});
        call(&mut editor, update).await;
    }
    if let Some(redis) = redis {
        redis.reset_counts();
    }
    let started = Instant::now();
    let generator_before = crate::process::own_cpu_time();
    let tasks: Vec<_> = positions
        .into_iter()
        .enumerate()
        .map(|(n, since)| {
            tokio::spawn(async move {
                let begun = Instant::now();
                let mut socket = connect(addr, "/rohrpost/", n + 1).await;
                let mut request = json!({"id": 1, "type": "subscribe", "auth_jwt": "hunter2", "data": {"type": "todo", "id": 1}});
                if let Some(since) = since {
                    request["data"]["since"] = since;
                }
                socket
                    .send(Frame::Text(request.to_string().into()))
                    .await
                    .expect("send");
                let mut replayed = 0;
                let recovered = loop {
                    let Some(Ok(Frame::Text(text))) = socket.next().await else {
                        panic!("the connection ended during the resume");
                    };
                    let message: Value = serde_json::from_str(&text).expect("JSON");
                    if message["type"] == "subscription-update" {
                        replayed += 1;
                    } else if message["type"] == "subscribe" {
                        assert!(
                            message.get("error").is_none(),
                            "the subscribe was refused: {message}"
                        );
                        break message["data"]["recovered"] == true;
                    }
                };
                if recovered {
                    assert_eq!(replayed, missed, "every missed update replayed");
                } else {
                    call(&mut socket, json!({"id": 2, "type": "todo.list"})).await;
                }
                let took = begun.elapsed().as_micros() as u64;
                let _ = socket.close(None).await;
                (took, recovered)
            })
        })
        .collect();
    let mut result = ResumeResult {
        elapsed: Duration::ZERO,
        generator_cpu: Duration::ZERO,
        current: histogram(),
        recovered: 0,
        redis_commands: Vec::new(),
    };
    for task in tasks {
        let (took, recovered) = task.await.expect("client");
        let _ = result.current.record(took.max(1));
        result.recovered += usize::from(recovered);
        progress.inc(1);
    }
    result.elapsed = started.elapsed();
    result.generator_cpu = crate::process::own_cpu_time() - generator_before;
    if let Some(redis) = redis {
        result.redis_commands = redis.commands();
    }
    let _ = editor.close(None).await;
    result
}

/// What one mass join measured.
pub(crate) struct JoinResult {
    /// From the first connection to the last subscribe reply.
    pub joined: Duration,
    /// From the first connection until both nodes counted every member (`None`: the group
    /// keeps no presence, or the counts never agreed within the deadline).
    pub agreed: Option<Duration>,
    /// The open sockets, kept until the measurements are taken.
    pub sockets: Vec<Socket>,
}

/// `members` clients, each its own user (`?user=m<k>`), alternating between nodes `a` and
/// `b`, subscribe to `group` (`todo-1` keeps presence, `todos-all` does not); with
/// presence, both nodes are asked for the count until both say `members`.
pub(crate) async fn join_many(
    a: SocketAddr,
    b: SocketAddr,
    members: usize,
    group: (&str, &str),
    progress: &indicatif::ProgressBar,
) -> JoinResult {
    let (object_type, object_id) = (group.0.to_owned(), group.1.to_owned());
    let presence = object_type == "todo";
    let mut askers = [
        connect(a, "/rohrpost/?user=asker-a", 1).await,
        connect(b, "/rohrpost/?user=asker-b", 2).await,
    ];
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> = (0..members)
        .map(|n| {
            let limit = limit.clone();
            let progress = progress.clone();
            let subscribe = json!({"id": n, "type": "subscribe", "auth_jwt": "hunter2",
                "data": {"type": object_type, "id": object_id.parse::<u64>().map(Value::from).unwrap_or(Value::from(object_id.clone()))}});
            let node = if n % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let mut socket = connect(node, &format!("/rohrpost/?user=m{n}"), n + 3).await;
                let reply = call(&mut socket, subscribe).await;
                assert!(reply.get("error").is_none(), "subscribe refused: {reply}");
                progress.inc(1);
                socket
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(members);
    for task in tasks {
        sockets.push(task.await.expect("member task"));
    }
    let joined = started.elapsed();
    let mut agreed = None;
    if presence {
        let ask = json!({"id": 0, "type": "presence", "auth_jwt": "hunter2",
            "data": {"type": "todo", "id": 1, "list": false}});
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let mut all = true;
            for asker in &mut askers {
                let reply = call(asker, ask.clone()).await;
                all &= reply["data"]["members"].as_u64() == Some(members as u64);
            }
            if all {
                agreed = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    sockets.extend(askers);
    JoinResult {
        joined,
        agreed,
        sockets,
    }
}

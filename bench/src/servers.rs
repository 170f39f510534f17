//! The servers a benchmark compares, each run in a process of its own (`rohrpost-bench
//! serve KIND`), pinned to one core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, SinkExt, StreamExt};
use rohrpost::notify::Notify;
use rohrpost::prelude::*;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

use rohrpost_todo as app;

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Plain tokio-tungstenite, default settings, echoing each text frame unchanged: the
    /// ceiling of the stack for round trips.
    EchoBaseline,
    /// rohrpost with its defaults: the built-in `ping`.
    Rohrpost,
    /// A hand-written `ping` on tokio-tungstenite and serde_json: each frame parsed into a
    /// `Value`, `{"id","type":"pong","data"?}` written back, writes batched as the echo
    /// baseline's. What a team would write without a framework.
    SerdePing,
    /// socketioxide (socket.io v5 over WebSocket): a `ping` event acknowledged with its
    /// data, what socket.io's request/reply is.
    SocketioAcks,
    /// jsonrpsee's WebSocket server: a `ping` method returning its params.
    Jsonrpsee,
    /// Hand-written tokio-tungstenite fan-out over the demo's subscribe/update messages:
    /// one serialization, the same bytes queued to every member, writes batched per
    /// connection. The ceiling for pushes.
    FanoutBaseline,
    /// The fan-out baseline's work on rohrpost: the built-in `subscribe`, and `todo.create`
    /// and `todo.update` handlers that push the change to `todo-<id>` at once through the
    /// server's groups. No database, no history, no conflation: what the framework costs
    /// for a push, apart from what the demo does around it.
    RohrpostGroups,
    /// The rohrpost todo demo (SQLite in a temporary directory; Redis groups with
    /// `--redis-url`).
    Todo,
    /// The todo demo without history: clients that come back refetch.
    TodoWithoutHistory,
}

pub(crate) async fn serve(
    kind: Kind,
    addr: &str,
    redis_url: Option<String>,
    database_url: Option<String>,
) {
    match kind {
        Kind::EchoBaseline => echo_baseline(addr).await,
        Kind::Rohrpost => {
            let server = Server::builder()
                .handlers(Handlers::new())
                .bind(addr)
                .await
                .expect("bind");
            ready(server.local_addr());
            server.serve().await;
        }
        Kind::FanoutBaseline => fanout_baseline(addr).await,
        Kind::RohrpostGroups => {
            let handlers = Handlers::new()
                .handler("todo.create", create)
                .handler("todo.update", update)
                .merge(rohrpost::subscribe::Subscriptions::allow_all().handlers());
            let server = Server::builder()
                .handlers(handlers)
                .bind(addr)
                .await
                .expect("bind");
            ready(server.local_addr());
            server.serve().await;
        }
        Kind::SerdePing => serde_ping(addr).await,
        Kind::SocketioAcks => socketio_acks(addr).await,
        Kind::Jsonrpsee => jsonrpsee_ping(addr).await,
        Kind::Todo | Kind::TodoWithoutHistory => {
            let directory = tempfile::tempdir_in(fast_tmp()).expect("temporary directory");
            let database_url = database_url.unwrap_or_else(|| app::sqlite_in(directory.path()));
            let config = app::Config {
                addr: addr.to_owned(),
                redis_url,
                history_size: if kind == Kind::Todo {
                    app::DEFAULT_HISTORY_SIZE
                } else {
                    0
                },
                ..app::Config::local(database_url)
            };
            let groups = config.groups().await.expect("group layer");
            let server = app::server(&config, groups).await.expect("todo server");
            ready(server.local_addr());
            server.serve().await;
        }
    }
}

/// A tmpfs where there is one, so that SQLite's fsync costs nothing.
fn fast_tmp() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Tells the parent process where the server listens.
fn ready(addr: std::net::SocketAddr) {
    println!("listening {addr}");
}

async fn echo_baseline(addr: &str) {
    // The stack's ceiling, written as well as it can be: every text frame back unchanged.
    serve_batched(addr, |frame| frame.is_text().then_some(frame)).await;
}

/// Serves `answer` to every frame: answers every frame that has arrived, then flushes once
/// (rohrpost's writer batches the same way).
async fn serve_batched(addr: &str, answer: fn(Frame) -> Option<Frame>) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    ready(listener.local_addr().expect("address"));
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(frame)) = socket.next().await {
                let mut frames = vec![frame];
                while let Some(Some(Ok(frame))) = socket.next().now_or_never() {
                    frames.push(frame);
                }
                let mut failed = false;
                for reply in frames.into_iter().filter_map(answer) {
                    failed |= socket.feed(reply).await.is_err();
                }
                if failed || socket.flush().await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The pong a hand-written server gives: `None` for what is not a `ping` with an id.
fn serde_pong(text: &str) -> Option<String> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let id = message.remove("id")?;
    if message.get("type").and_then(Value::as_str) != Some("ping") {
        return None;
    }
    let mut reply = serde_json::Map::new();
    reply.insert("id".into(), id);
    reply.insert("type".into(), Value::from("pong"));
    if let Some(data) = message.remove("data") {
        reply.insert("data".into(), data);
    }
    serde_json::to_string(&reply).ok()
}

async fn serde_ping(addr: &str) {
    serve_batched(addr, |frame| match frame {
        Frame::Text(text) => serde_pong(&text).map(|pong| Frame::Text(pong.into())),
        _ => None,
    })
    .await;
}

async fn socketio_acks(addr: &str) {
    use socketioxide::extract::{AckSender, Data, SocketRef};
    let (layer, io) = socketioxide::SocketIo::new_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "ping",
            async |Data::<serde_json::Value>(data), ack: AckSender| {
                let _ = ack.send(&data);
            },
        );
    });
    let app = axum::Router::new().layer(layer);
    let listener = TcpListener::bind(addr).await.expect("bind");
    ready(listener.local_addr().expect("address"));
    axum::serve(listener, app).await.expect("socket.io server");
}

async fn jsonrpsee_ping(addr: &str) {
    let server = jsonrpsee::server::Server::builder()
        .build(addr)
        .await
        .expect("bind");
    let mut module = jsonrpsee::RpcModule::new(());
    module
        .register_method("ping", |params, _, _| params.parse::<serde_json::Value>())
        .expect("a method");
    ready(server.local_addr().expect("address"));
    let handle = server.start(module);
    handle.stopped().await;
}

/// A change as the fan-out baseline pushes it: `{"id", "title", "updated_fields"}` to
/// `todo-<id>`.
struct Change {
    id: i64,
    title: Value,
}

impl Notify for Change {
    fn pk(&self) -> Value {
        json!(self.id)
    }

    fn group_name(&self, _: rohrpost::notify::Change) -> String {
        format!("todo-{}", self.id)
    }

    fn notification_data(&self, _: Option<&[&str]>, _: rohrpost::notify::Change) -> Value {
        json!({"id": self.id, "title": self.title})
    }
}

/// The data of `todo.create` and `todo.update`.
#[derive(serde::Deserialize)]
struct Todo {
    id: Option<i64>,
    title: Value,
}

/// `todo.create` of `RohrpostGroups`: the change pushed at once, the todo as the reply.
async fn create(groups: Groups, Data(todo): Data<Todo>) -> Result<Json<Value>, Error> {
    push_change(groups, todo, rohrpost::notify::Change::Create).await
}

/// `todo.update` of `RohrpostGroups`, as `create`.
async fn update(groups: Groups, Data(todo): Data<Todo>) -> Result<Json<Value>, Error> {
    push_change(groups, todo, rohrpost::notify::Change::Update).await
}

async fn push_change(
    groups: Groups,
    todo: Todo,
    kind: rohrpost::notify::Change,
) -> Result<Json<Value>, Error> {
    let change = Change {
        id: todo.id.unwrap_or(1),
        title: todo.title,
    };
    groups
        .notify(&change, kind, Some(&["title"]))
        .await
        .map_err(Error::internal)?;
    Ok(Json(json!({"id": change.id, "title": change.title})))
}

type Members = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Utf8Bytes>>>>>;

async fn fanout_baseline(addr: &str) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    ready(listener.local_addr().expect("address"));
    let members: Members = Arc::default();
    let push_ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(fanout_connection(stream, members.clone(), push_ids.clone()));
    }
}

async fn fanout_connection(
    stream: TcpStream,
    members: Members,
    push_ids: Arc<std::sync::atomic::AtomicU64>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut frames) = socket.split();
    let (sender, mut queue) = mpsc::unbounded_channel::<Utf8Bytes>();
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            if sink.feed(Frame::Text(first)).await.is_err() {
                return;
            }
            while let Ok(next) = queue.try_recv() {
                if sink.feed(Frame::Text(next)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = frames.next().await {
        let Frame::Text(text) = frame else { continue };
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let id = &request["id"];
        match request["type"].as_str() {
            Some("subscribe") => {
                let group = format!("todo-{}", request["data"]["id"]);
                let reply = json!({"id": id, "type": "subscribe", "data": {"group": group}});
                members
                    .lock()
                    .unwrap()
                    .entry(group)
                    .or_default()
                    .push(sender.clone());
                let _ = sender.send(reply.to_string().into());
            }
            Some("todo.create" | "todo.update") => {
                let kind = if request["type"] == "todo.create" {
                    "create"
                } else {
                    "update"
                };
                let todo_id = request["data"]["id"].as_i64().unwrap_or(1);
                let title = &request["data"]["title"];
                let group = format!("todo-{todo_id}");
                let push_id = push_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let push: Utf8Bytes = json!({
                    "id": push_id,
                    "type": "subscription-update",
                    "data": {"type": kind, "group": group,
                             "object": {"id": todo_id, "title": title, "updated_fields": ["title"]}}
                })
                .to_string()
                .into();
                if let Some(list) = members.lock().unwrap().get(&group) {
                    for member in list {
                        let _ = member.send(push.clone());
                    }
                }
                let reply = json!({"id": id, "type": request["type"], "data": {"id": todo_id, "title": title}});
                let _ = sender.send(reply.to_string().into());
            }
            _ => {
                let reply = json!({"id": id, "type": "pong"});
                let _ = sender.send(reply.to_string().into());
            }
        }
    }
}

//! A chat server on rohrpost: rooms, direct messages to every connection of a user, and
//! connection hooks. `cargo run --example chat`, then connect to
//! `ws://127.0.0.1:8000/rohrpost/?user=ada` (`ROHRPOST_ADDR` changes the address).
//!
//! ```text
//! (connect)                                      ← {"type":"chat.welcome","data":{"user":"ada"}}
//! → {"id":1,"type":"chat.join","data":{"room":"rust"}}
//!                                                ← {"id":1,"type":"chat.join","data":{"room":"rust","members":["ada"]}}
//! → {"id":2,"type":"chat.say","data":{"room":"rust","text":"hi"}}
//!                                                ← {"id":2,"type":"chat.say","data":{}}
//!   the others in "rust" get                       {"type":"chat.message","data":{"room":"rust","user":"ada","text":"hi"}}
//! → {"id":3,"type":"chat.dm","data":{"to":"bob","text":"psst"}}
//!   every connection of bob gets                   {"type":"chat.direct","data":{"from":"ada","text":"psst"}}
//! → {"id":4,"type":"chat.rooms"}                 ← {"id":4,"type":"chat.rooms","data":{"rooms":["rust"]}}
//! → {"id":5,"type":"chat.leave","data":{"room":"rust"}}
//!   the others in "rust" get                       {"type":"chat.left","data":{"room":"rust","user":"ada"}}
//! ```
//!
//! Without `?user=NAME` the handshake is refused with HTTP 401. Rooms live in this process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rohrpost::handshake::{Accept, Handshake, Refusal};
use rohrpost::prelude::*;
use rohrpost::server::ServerBuilder;

/// The user a connection was opened for (`?user=NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// Who is in which room: room → connection id → user name. Clones share it.
#[derive(Debug, Default, Clone)]
pub struct Rooms(Arc<Mutex<BTreeMap<String, BTreeMap<u64, String>>>>);

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeMap<u64, String>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection; returns the room's members' names, sorted.
    fn enter(&self, room: &str, connection: u64, user: &str) -> Vec<String> {
        let mut rooms = self.lock();
        let members = rooms.entry(room.to_owned()).or_default();
        members.insert(connection, user.to_owned());
        let names: BTreeSet<&String> = members.values().collect();
        names.into_iter().cloned().collect()
    }

    /// Removes a connection; returns whether it was in the room.
    fn exit(&self, room: &str, connection: u64) -> bool {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(room) else {
            return false;
        };
        let was_in = members.remove(&connection).is_some();
        if members.is_empty() {
            rooms.remove(room);
        }
        was_in
    }

    /// The rooms a connection is in.
    fn of(&self, connection: u64) -> Vec<String> {
        let rooms = self.lock();
        rooms
            .iter()
            .filter(|(_, members)| members.contains_key(&connection))
            .map(|(room, _)| room.clone())
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

fn room_group(room: &str) -> String {
    format!("room-{room}")
}

fn user_group(user: &str) -> String {
    format!("user-{user}")
}

#[derive(Debug, Deserialize)]
struct Room {
    room: String,
}

#[derive(Debug, Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct Direct {
    to: String,
    text: String,
}

/// A push of `message_type` with `data`, to `group` but not to `except`.
async fn tell_others(
    conn: &Connection,
    group: &str,
    message_type: &str,
    data: Value,
) -> Result<(), Error> {
    let push = Message::push(message_type, &data).map_err(Error::internal)?;
    conn.server_groups()
        .send_except(group, &push, conn)
        .await
        .map_err(Error::internal)?;
    Ok(())
}

async fn join(
    conn: Connection,
    Extension(user): Extension<User>,
    rooms: State<Rooms>,
    Data(Room { room }): Data<Room>,
) -> Result<Json<Value>, Error> {
    if room.is_empty() {
        return Err(Error::new("Room must not be empty."));
    }
    conn.join(&room_group(&room))
        .await
        .map_err(Error::internal)?;
    let members = rooms.enter(&room, conn.id(), &user.0);
    tell_others(
        &conn,
        &room_group(&room),
        "chat.joined",
        json!({"room": room, "user": user.0}),
    )
    .await?;
    Ok(Json(json!({"room": room, "members": members})))
}

async fn say(
    conn: Connection,
    Extension(user): Extension<User>,
    Data(Say { room, text }): Data<Say>,
) -> Result<Json<Value>, Error> {
    if text.is_empty() {
        return Err(Error::new("Text must not be empty."));
    }
    if !conn.is_member(&room_group(&room)) {
        return Err(Error::new(format!("Not in room {room}.")));
    }
    tell_others(
        &conn,
        &room_group(&room),
        "chat.message",
        json!({"room": room, "user": user.0, "text": text}),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn dm(
    groups: Groups,
    Extension(user): Extension<User>,
    Data(Direct { to, text }): Data<Direct>,
) -> Result<Json<Value>, Error> {
    let push = Message::push("chat.direct", &json!({"from": user.0, "text": text}))
        .map_err(Error::internal)?;
    let reached = groups
        .send(&user_group(&to), &push)
        .await
        .map_err(Error::internal)?;
    if reached == 0 {
        return Err(Error::new("No such user online."));
    }
    Ok(Json(json!({})))
}

async fn list(rooms: State<Rooms>) -> Json<Value> {
    Json(json!({"rooms": rooms.names()}))
}

async fn leave(
    conn: Connection,
    Extension(user): Extension<User>,
    rooms: State<Rooms>,
    Data(Room { room }): Data<Room>,
) -> Result<Json<Value>, Error> {
    if !rooms.exit(&room, conn.id()) {
        return Err(Error::new(format!("Not in room {room}.")));
    }
    conn.leave(&room_group(&room));
    tell_others(
        &conn,
        &room_group(&room),
        "chat.left",
        json!({"room": room, "user": user.0}),
    )
    .await?;
    Ok(Json(json!({})))
}

/// `?user=NAME`, or HTTP 401.
async fn authenticate(handshake: Handshake) -> Result<Accept, Refusal> {
    match handshake.query("user") {
        Some(user) if !user.is_empty() => Ok(Accept::new().with(User(user.into_owned()))),
        _ => Err(Refusal::unauthorized("a user name is required: ?user=NAME")),
    }
}

/// The chat's handlers.
pub fn handlers() -> Handlers {
    Handlers::new()
        .handler("chat.join", join)
        .handler("chat.say", say)
        .handler("chat.dm", dm)
        .handler("chat.rooms", list)
        .handler("chat.leave", leave)
}

/// The chat server's settings: handlers, the `?user=` handshake, the welcome on connect
/// and the goodbyes on disconnect.
pub fn builder() -> ServerBuilder {
    let rooms = Rooms::default();
    let on_disconnect = rooms.clone();
    Server::builder()
        .handlers(handlers())
        .state(rooms)
        .authenticate(authenticate)
        .on_connect(|conn: Connection| async move {
            let Some(user) = conn.get::<User>() else {
                return;
            };
            // Every connection of a user is in the user's group: a direct message reaches
            // them all, also those that have sent nothing yet.
            let _ = conn.join(&user_group(&user.0)).await;
            if let Ok(welcome) = Message::push("chat.welcome", &json!({"user": user.0})) {
                let _ = conn.send(welcome).await;
            }
        })
        .on_disconnect(move |conn: Connection| {
            let rooms = on_disconnect.clone();
            async move {
                let Some(user) = conn.get::<User>() else {
                    return;
                };
                for room in rooms.of(conn.id()) {
                    rooms.exit(&room, conn.id());
                    let _ = tell_others(
                        &conn,
                        &room_group(&room),
                        "chat.left",
                        json!({"room": room, "user": user.0}),
                    )
                    .await;
                }
            }
        })
}

/// Serves the chat on `addr` until Ctrl-C or SIGTERM.
pub async fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let server = builder().bind(addr).await?;
    println!("rohrpost chat: {}?user=NAME", server.url());
    server.serve().await;
    Ok(())
}

//! The chat example over real sockets, driven by the Rust client only: the `?user=`
//! handshake, the welcome pushed on connect, rooms, messages to the others, direct messages
//! to every connection of a user, and goodbyes on leave and on disconnect.

use std::time::Duration;

use rohrpost::client::{Client, ClientError, Pushed};
use rohrpost::server::RunningServer;
use serde_json::{json, Value};

async fn chat() -> RunningServer {
    rohrpost_chat::builder()
        .bind("127.0.0.1:0")
        .await
        .expect("chat binds")
        .spawn()
}

async fn user(server: &RunningServer, name: &str) -> Client {
    Client::connect(format!("{}?user={name}", server.url()))
        .await
        .expect("connects")
}

/// The next push of a listener, within a second.
async fn next(pushes: &mut Pushed<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(1), pushes.next())
        .await
        .expect("a push within a second")
        .expect("the client is open")
        .expect("decodes")
}

async fn silent(pushes: &mut Pushed<Value>) {
    let waited = tokio::time::timeout(Duration::from_millis(150), pushes.next()).await;
    assert!(waited.is_err(), "unexpected push: {waited:?}");
}

fn refusal(error: ClientError) -> String {
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_user_is_refused_with_401_and_its_reason() {
    let server = chat().await;
    let error = Client::connect(server.url()).await.unwrap_err();
    match &error {
        ClientError::Refused { status, body, .. } => {
            assert_eq!(*status, 401);
            assert!(body.contains("?user=NAME"), "{body}");
        }
        other => panic!("not a refusal: {}", refusal(other.clone())),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_is_pushed_without_an_id_and_kept_for_a_listener_that_comes_later() {
    let server = chat().await;
    let ada = user(&server, "Ad%C3%A1").await;
    // The welcome arrived before anyone listened: it was kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut everything = ada.incoming();
    let welcome = tokio::time::timeout(Duration::from_secs(1), everything.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        welcome,
        json!({"type": "chat.welcome", "data": {"user": "Adá"}})
    );
    // Every listener gets it, typed ones too.
    #[derive(serde::Deserialize)]
    struct Welcome {
        user: String,
    }
    let mut typed = ada.on::<Welcome>("chat.welcome");
    let again = typed.next().await.unwrap().unwrap();
    assert_eq!(again.user, "Adá");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_tell_the_others_who_joins_speaks_and_leaves() {
    let server = chat().await;
    let ada = user(&server, "ada").await;
    let bob = user(&server, "bob").await;
    let mut ada_joined = ada.on::<Value>("chat.joined");
    let mut ada_said = ada.on::<Value>("chat.message");
    let mut ada_left = ada.on::<Value>("chat.left");
    let mut bob_joined = bob.on::<Value>("chat.joined");
    let mut bob_said = bob.on::<Value>("chat.message");

    let reply = ada
        .call("chat.join", json!({"room": "rust"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"room": "rust", "members": ["ada"]}));
    let reply = bob
        .call("chat.join", json!({"room": "rust"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"room": "rust", "members": ["ada", "bob"]}));
    assert_eq!(
        next(&mut ada_joined).await,
        json!({"room": "rust", "user": "bob"})
    );
    silent(&mut bob_joined).await;

    let reply = bob
        .call("chat.say", json!({"room": "rust", "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({}));
    assert_eq!(
        next(&mut ada_said).await,
        json!({"room": "rust", "user": "bob", "text": "hi"})
    );
    silent(&mut bob_said).await;

    let empty = bob
        .call("chat.say", json!({"room": "rust", "text": ""}))
        .await
        .unwrap_err();
    assert_eq!(
        empty,
        ClientError::Reply {
            error: json!("Text must not be empty."),
            data: None
        }
    );
    let elsewhere = bob
        .call("chat.say", json!({"room": "lisp", "text": "hi"}))
        .await
        .unwrap_err();
    assert_eq!(
        elsewhere,
        ClientError::Reply {
            error: json!("Not in room lisp."),
            data: None
        }
    );

    ada.call("chat.join", json!({"room": "go"})).await.unwrap();
    let rooms = bob.call("chat.rooms", json!(null)).await.unwrap();
    assert_eq!(rooms, json!({"rooms": ["go", "rust"]}));

    bob.call("chat.leave", json!({"room": "rust"}))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ada_left).await,
        json!({"room": "rust", "user": "bob"})
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_every_connection_of_a_user_that_never_spoke() {
    let server = chat().await;
    let ada = user(&server, "ada").await;
    let carol_phone = user(&server, "carol").await;
    let carol_laptop = user(&server, "carol").await;
    let mut on_phone = carol_phone.on::<Value>("chat.direct");
    let mut on_laptop = carol_laptop.on::<Value>("chat.direct");

    let reply = ada
        .call("chat.dm", json!({"to": "carol", "text": "psst"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({}));
    for pushes in [&mut on_phone, &mut on_laptop] {
        assert_eq!(next(pushes).await, json!({"from": "ada", "text": "psst"}));
    }
    let nobody = ada
        .call("chat.dm", json!({"to": "dave", "text": "?"}))
        .await
        .unwrap_err();
    assert_eq!(
        nobody,
        ClientError::Reply {
            error: json!("No such user online."),
            data: None
        }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_disconnects_is_said_goodbye_to() {
    let server = chat().await;
    let ada = user(&server, "ada").await;
    let dan = user(&server, "dan").await;
    let mut ada_left = ada.on::<Value>("chat.left");
    ada.call("chat.join", json!({"room": "rust"}))
        .await
        .unwrap();
    dan.call("chat.join", json!({"room": "rust"}))
        .await
        .unwrap();
    dan.close().await;
    assert_eq!(
        next(&mut ada_left).await,
        json!({"room": "rust", "user": "dan"})
    );
    let rooms = ada.call("chat.rooms", json!(null)).await.unwrap();
    assert_eq!(rooms, json!({"rooms": ["rust"]}));
    server.shutdown().await;
}

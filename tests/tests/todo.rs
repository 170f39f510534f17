//! The todo demo over real sockets, on SQLite and (when configured) PostgreSQL: several
//! clients subscribe, another changes todos, and each subscriber gets exactly the pushes of
//! its groups, only for committed transactions.
//!
//! PostgreSQL runs when `ROHRPOST_TEST_POSTGRES` names a server URL (CI sets it to the one
//! on 127.0.0.1:5432); each test creates a database of its own there and drops it.

use rohrpost_todo as app;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use rohrpost::groups::GroupStats;
use rohrpost::notify::Transaction;
use rohrpost::Groups;
use serde_json::{json, Value};
use sqlx::Connection;
use tests::{Client, TestServer};

const TOKEN: &str = "hunter2";

/// A running demo server on a fresh database.
struct Demo {
    server: TestServer,
    groups: Groups,
    database_url: String,
}

impl Demo {
    async fn start(database_url: &str) -> Self {
        let config = app::Config::local(database_url);
        let groups = Groups::memory();
        let server = app::server(&config, groups.clone())
            .await
            .expect("demo server starts");
        Self {
            server: TestServer::run(server),
            groups,
            database_url: database_url.into(),
        }
    }

    async fn client(&self) -> Client {
        self.server.client().await
    }

    /// A client subscribed to todo `id`.
    async fn subscriber(&self, id: i64) -> Client {
        let mut client = self.client().await;
        let reply = client.call(subscribe(1, id, TOKEN)).await;
        assert_eq!(
            reply,
            json!({"id": 1, "type": "subscribe", "data": {"group": format!("todo-{id}")}})
        );
        client
    }

    /// Waits until every connection has left every group.
    async fn wait_for_empty_groups(&self) {
        for _ in 0..500 {
            if self.groups.stats() == GroupStats::default() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("groups not empty: {:?}", self.groups.stats());
    }
}

fn subscribe(id: i64, todo: i64, token: &str) -> Value {
    json!({"id": id, "type": "subscribe", "auth_jwt": token, "data": {"type": "todo", "id": todo}})
}

/// Reads the next push and checks everything but its generated id.
async fn expect_push(client: &mut Client, change: &str, group: &str, object: Value) {
    client.expect_push(change, group, object).await;
}

async fn create_update_delete_reach_subscribers_with_the_exact_push(demo: Demo) {
    let mut first = demo.subscriber(1).await;
    let mut second = demo.subscriber(1).await;
    let mut other = demo.subscriber(2).await;
    let mut editor = demo.client().await;

    let created = editor
        .call(json!({"id": 10, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    assert_eq!(
        created,
        json!({"id": 10, "type": "todo.create", "data": {"id": 1, "title": "milk"}})
    );
    for subscriber in [&mut first, &mut second] {
        expect_push(
            subscriber,
            "create",
            "todo-1",
            json!({"id": 1, "title": "milk"}),
        )
        .await;
    }

    let updated = editor
        .call(json!({"id": 11, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}))
        .await;
    assert_eq!(
        updated,
        json!({"id": 11, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}})
    );
    for subscriber in [&mut first, &mut second] {
        let object = json!({"id": 1, "title": "oat milk", "updated_fields": ["title"]});
        expect_push(subscriber, "update", "todo-1", object).await;
    }

    let deleted = editor
        .call(json!({"id": 12, "type": "todo.delete", "data": {"id": 1}}))
        .await;
    assert_eq!(
        deleted,
        json!({"id": 12, "type": "todo.delete", "data": {"id": 1}})
    );
    for subscriber in [&mut first, &mut second] {
        expect_push(
            subscriber,
            "delete",
            "todo-1",
            json!({"id": 1, "title": "oat milk"}),
        )
        .await;
    }

    // The editor subscribed to nothing, and todo-2's subscriber heard nothing of todo-1.
    editor.expect_silence(Duration::from_millis(100)).await;
    other.expect_silence(Duration::from_millis(100)).await;

    // The second todo gets pk 2 and reaches its own subscriber only.
    editor
        .call(json!({"id": 13, "type": "todo.create", "data": {"title": "bread"}}))
        .await;
    expect_push(
        &mut other,
        "create",
        "todo-2",
        json!({"id": 2, "title": "bread"}),
    )
    .await;
    first.expect_silence(Duration::from_millis(100)).await;
}

async fn unsubscribe_stops_pushes(demo: Demo) {
    let mut subscriber = demo.subscriber(1).await;
    let mut editor = demo.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    expect_push(
        &mut subscriber,
        "create",
        "todo-1",
        json!({"id": 1, "title": "milk"}),
    )
    .await;

    let reply = subscriber
        .call(json!({"id": 4, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(reply, json!({"id": 4, "type": "unsubscribe"}));
    assert_eq!(demo.groups.member_count("todo-1"), 0);

    editor
        .call(json!({"id": 2, "type": "todo.update", "data": {"id": 1, "title": "bread"}}))
        .await;
    subscriber.expect_silence(Duration::from_millis(200)).await;
}

async fn bad_token_is_refused(demo: Demo) {
    let mut client = demo.client().await;
    for request in [
        subscribe(3, 1, "wrong"),
        json!({"id": 3, "type": "subscribe", "data": {"type": "todo", "id": 1}}),
    ] {
        assert_eq!(
            client.call(request).await,
            json!({"id": 3, "type": "subscribe", "error": "ACCESS_DENIED"})
        );
    }
    assert_eq!(demo.groups.member_count("todo-1"), 0);
    let mut editor = demo.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    client.expect_silence(Duration::from_millis(200)).await;
}

async fn unknown_ids_get_a_clear_error_and_push_nothing(demo: Demo) {
    let mut subscriber = demo.subscriber(7).await;
    let mut editor = demo.client().await;
    assert_eq!(
        editor
            .call(json!({"id": 1, "type": "todo.update", "data": {"id": 7, "title": "x"}}))
            .await,
        json!({"id": 1, "type": "todo.update", "error": "Todo 7 does not exist."})
    );
    assert_eq!(
        editor
            .call(json!({"id": 2, "type": "todo.delete", "data": {"id": 7}}))
            .await,
        json!({"id": 2, "type": "todo.delete", "error": "Todo 7 does not exist."})
    );
    assert_eq!(
        editor
            .call(json!({"id": 3, "type": "todo.create", "data": {"name": "x"}}))
            .await,
        json!({"id": 3, "type": "todo.create", "error": "Invalid data: missing field `title`"})
    );
    subscriber.expect_silence(Duration::from_millis(200)).await;
}

async fn rolled_back_transaction_pushes_nothing(demo: Demo) {
    let mut subscriber = demo.subscriber(1).await;
    let db = app::Db::connect(&demo.database_url)
        .await
        .expect("second pool");

    let mut tx = Transaction::begin(db.pool(), demo.groups.clone())
        .await
        .unwrap();
    sqlx::query("INSERT INTO todos (title) VALUES ($1)")
        .bind("never")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.created(&app::Todo {
        id: 1,
        title: "never".into(),
    });
    tx.rollback().await.unwrap();

    // Dropped without commit: a rollback too.
    let mut tx = Transaction::begin(db.pool(), demo.groups.clone())
        .await
        .unwrap();
    tx.created(&app::Todo {
        id: 1,
        title: "dropped".into(),
    });
    drop(tx);

    subscriber.expect_silence(Duration::from_millis(200)).await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM todos")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "the insert was rolled back");

    // A committed one is pushed.
    let mut tx = Transaction::begin(db.pool(), demo.groups.clone())
        .await
        .unwrap();
    tx.created(&app::Todo {
        id: 1,
        title: "kept".into(),
    });
    tx.commit().await.unwrap();
    expect_push(
        &mut subscriber,
        "create",
        "todo-1",
        json!({"id": 1, "title": "kept"}),
    )
    .await;
}

async fn closing_connections_empties_their_groups(demo: Demo) {
    for cycle in 0..1000 {
        let mut client = demo.client().await;
        client.call(subscribe(1, cycle % 10, TOKEN)).await;
        if cycle % 2 == 0 {
            client.close().await;
        } else {
            drop(client); // gone without a closing handshake
        }
    }
    demo.wait_for_empty_groups().await;
    // A connection still open keeps its membership.
    let _subscriber = demo.subscriber(1).await;
    assert_eq!(
        demo.groups.stats(),
        GroupStats {
            groups: 1,
            memberships: 1,
            connections: 1
        }
    );
}

/// Runs `scenario` on a fresh SQLite file.
async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Demo) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = app::sqlite_in(dir.path());
    scenario(Demo::start(&url).await).await;
}

/// Runs `scenario` in a fresh PostgreSQL database, dropped afterwards, when
/// `ROHRPOST_TEST_POSTGRES` is set.
async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Demo) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(admin_url) = std::env::var("ROHRPOST_TEST_POSTGRES") else {
        eprintln!("skipped: set ROHRPOST_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres to run on PostgreSQL");
        return;
    };
    let name = format!(
        "rohrpost_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
    // The name is ours: letters, digits and underscores.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    let url = format!("{base}/{name}");
    let outcome = AssertUnwindSafe(async {
        let demo = Demo::start(&url).await;
        scenario(demo).await;
    })
    .catch_unwind()
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop the test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_sqlite(super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_postgres(super::$scenario).await;
                }
            )*
        }
    };
}

on_both_databases!(
    create_update_delete_reach_subscribers_with_the_exact_push,
    unsubscribe_stops_pushes,
    bad_token_is_refused,
    unknown_ids_get_a_clear_error_and_push_nothing,
    rolled_back_transaction_pushes_nothing,
    closing_connections_empties_their_groups,
);

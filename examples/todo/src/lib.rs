//! The todo demo: todos in a real database (SQLite by default, PostgreSQL by URL), every
//! change pushed to the subscribers of `todo-<id>` once its transaction commits.
//!
//! One library for the demo's binary (`cargo run --example todo`, or `-p rohrpost-todo`),
//! the integration tests and the benchmarks, so that all of them serve exactly the same
//! handlers.

use std::time::Duration;

use rohrpost::groups::History;
use rohrpost::handshake::{Accept, Handshake, Refusal};
use rohrpost::notify::{Notify, Transaction};
use rohrpost::prelude::*;
use rohrpost::presence::Presence;
use rohrpost::server::ServerError;
use rohrpost::subscribe::Subscriptions;
use rohrpost::Groups;
use schemars::JsonSchema;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// The demo's settings; each comes from a flag or from the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "The rohrpost todo demo: a todo list whose changes reach every subscriber")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ROHRPOST_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// The token subscribers must send as `auth_jwt`.
    #[arg(long, env = "ROHRPOST_TOKEN", default_value = DEMO_TOKEN)]
    pub token: String,
    /// Where the todos live: `sqlite://FILE` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://todo.sqlite?mode=rwc"
    )]
    pub database_url: String,
    /// Share groups with other nodes through this Redis (`redis://host:port/`); without it,
    /// groups live in this process only.
    #[arg(long, env = "ROHRPOST_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Pushes kept per todo (`todo-*`) and for the list (`todos-*`), for 5 minutes, so
    /// that a page that reconnects gets what it missed (in Redis when `redis_url` is set); 0 keeps none.
    #[arg(long, env = "ROHRPOST_HISTORY_SIZE", default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,
    /// Seconds a todo's viewer whose page closed stays listed, in case it comes back (a
    /// reload); fractions allowed.
    #[arg(long, env = "ROHRPOST_PRESENCE_GRACE", default_value_t = 15.0, value_parser = seconds)]
    pub presence_grace: f64,
    /// With `redis_url`: seconds after which a node that stopped is taken for dead and its
    /// viewers leave; fractions allowed.
    #[arg(long, env = "ROHRPOST_NODE_TTL", default_value_t = 15.0, value_parser = seconds)]
    pub node_ttl: f64,
    /// Print the protocol's AsyncAPI document (JSON) and exit.
    #[arg(long)]
    pub asyncapi: bool,
    /// Print the protocol's TypeScript declarations and exit.
    #[arg(long, conflicts_with = "asyncapi")]
    pub typescript: bool,
}

/// A duration in seconds: a finite number, not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "`{text}` is not a number of seconds (for example 15 or 0.5)"
        )),
    }
}

/// The token the demo expects unless told otherwise (its page embeds it: it is public).
pub const DEMO_TOKEN: &str = "hunter2";

impl Config {
    /// The demo's defaults on a free port of 127.0.0.1, with its todos at `database_url`:
    /// what tests and benchmarks start, changing a field or two.
    pub fn local(database_url: impl Into<String>) -> Self {
        Self {
            addr: "127.0.0.1:0".into(),
            token: DEMO_TOKEN.into(),
            database_url: database_url.into(),
            redis_url: None,
            history_size: DEFAULT_HISTORY_SIZE,
            presence_grace: 15.0,
            node_ttl: 15.0,
            asyncapi: false,
            typescript: false,
        }
    }

    /// Who is looking at which todo: `todo-*` groups, with the grace and node TTL of the
    /// settings.
    pub fn presence(&self) -> Presence {
        Presence::groups(["todo-*"])
            .grace(Duration::from_secs_f64(self.presence_grace))
            .node_ttl(Duration::from_secs_f64(self.node_ttl))
    }
}

/// An SQLite file `todo.sqlite` in `dir`, as a database URL.
pub fn sqlite_in(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("todo.sqlite").display())
}

/// The pushes the demo keeps per group unless told otherwise.
pub const DEFAULT_HISTORY_SIZE: usize = 100;

/// How long the demo keeps a group's pushes after its last one.
pub const HISTORY_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl Config {
    /// The group layer the settings ask for: Redis when a URL is given, else in-process.
    pub async fn groups(&self) -> Result<Groups, rohrpost::groups::GroupError> {
        match &self.redis_url {
            Some(url) => Ok(Groups::new(
                rohrpost::groups::RedisGroups::connect(url).await?,
            )),
            None => Ok(Groups::memory()),
        }
    }
}

/// The todo table, whichever database holds it.
#[derive(Debug)]
pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Connects and creates the table if it is missing.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(5)
            // A file database has no connection to lose, and the check is one more round
            // trip to sqlx's SQLite thread per request (8 -> 7 thread sleeps per update,
            // BENCHMARKS.md); a network database keeps it.
            .test_before_acquire(!url.starts_with("sqlite"))
            .connect(url)
            .await?;
        let create = if url.starts_with("postgres") {
            "CREATE TABLE IF NOT EXISTS todos (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL)"
        } else {
            "CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL)"
        };
        sqlx::query(create).execute(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A todo, as stored and as pushed: `{"id", "title"}` to the group `todo-<id>`. Every push
/// carries the whole todo, so a subscriber that falls behind gets only the latest update of
/// each (conflation) instead of being disconnected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Notify)]
#[rohrpost(serialize, conflate)]
pub struct Todo {
    pub id: i64,
    pub title: String,
}

/// A todo as the list sees it: creations and deletions also go to the group `todos-all`,
/// so that pages learn of todos other tabs add.
struct Listed<'a>(&'a Todo);

/// The group of the whole list.
pub const LIST_GROUP: &str = "todos-all";

impl Notify for Listed<'_> {
    fn pk(&self) -> Value {
        json!(self.0.id)
    }

    fn group_name(&self, _: rohrpost::notify::Change) -> String {
        LIST_GROUP.to_owned()
    }

    fn notification_data(&self, _: Option<&[&str]>, _: rohrpost::notify::Change) -> Value {
        json!(self.0)
    }

    fn conflate(&self) -> bool {
        true
    }
}

impl Todo {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
        })
    }
}

/// A todo to create.
#[derive(Deserialize, JsonSchema)]
struct NewTodo {
    title: String,
}

/// A todo's id.
#[derive(Serialize, Deserialize, JsonSchema)]
struct TodoId {
    id: i64,
}

fn not_found(id: i64) -> Error {
    Error::new(format!("Todo {id} does not exist."))
}

/// `todo.create {"title"}` → `{"id", "title"}`, pushed as `create`.
#[rohrpost_handler("todo.create")]
async fn create(
    db: State<Db>,
    groups: Groups,
    Data(new): Data<NewTodo>,
) -> Result<Json<Todo>, Error> {
    let mut tx = Transaction::begin(db.pool(), groups).await?;
    let row = sqlx::query("INSERT INTO todos (title) VALUES ($1) RETURNING id, title")
        .bind(&new.title)
        .fetch_one(&mut *tx)
        .await?;
    let todo = Todo::from_row(&row)?;
    tx.created(&todo);
    tx.created(&Listed(&todo));
    tx.commit().await?;
    Ok(Json(todo))
}

/// `todo.update {"id", "title"}` → `{"id", "title"}`, pushed as `update` with
/// `updated_fields: ["title"]`.
#[rohrpost_handler("todo.update")]
async fn update(
    db: State<Db>,
    groups: Groups,
    Data(todo): Data<Todo>,
) -> Result<Json<Todo>, Error> {
    let mut tx = Transaction::begin(db.pool(), groups).await?;
    let row = sqlx::query("UPDATE todos SET title = $1 WHERE id = $2 RETURNING id, title")
        .bind(&todo.title)
        .bind(todo.id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(todo.id))?;
    let todo = Todo::from_row(&row)?;
    tx.updated(&todo, &["title"]);
    tx.commit().await?;
    Ok(Json(todo))
}

/// `todo.delete {"id"}` → `{"id"}`, pushed as `delete` with the todo as it was.
#[rohrpost_handler("todo.delete")]
async fn delete(
    db: State<Db>,
    groups: Groups,
    Data(TodoId { id }): Data<TodoId>,
) -> Result<Json<TodoId>, Error> {
    let mut tx = Transaction::begin(db.pool(), groups).await?;
    let row = sqlx::query("DELETE FROM todos WHERE id = $1 RETURNING id, title")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(id))?;
    let todo = Todo::from_row(&row)?;
    tx.deleted(&todo);
    tx.deleted(&Listed(&todo));
    tx.commit().await?;
    Ok(Json(TodoId { id }))
}

/// `todo.list` → every todo, oldest first.
#[rohrpost_handler("todo.list")]
async fn list(db: State<Db>) -> Result<Json<Vec<Todo>>, Error> {
    let rows = sqlx::query("SELECT id, title FROM todos ORDER BY id")
        .fetch_all(db.pool())
        .await?;
    let todos = rows.iter().map(Todo::from_row).collect::<Result<_, _>>()?;
    Ok(Json(todos))
}

/// Every todo with the positions its rows reflect: `{"todos": [...], "positions": {group:
/// {offset, epoch}}}` for the list group and each todo's group (groups without history are
/// left out). The positions are read before the rows, so subscribing with them as `since`
/// replays every change the rows may miss (and perhaps some they already show, which are
/// safe to apply again): a refetch that no change can slip past.
#[rohrpost_handler("todo.snapshot")]
async fn snapshot(db: State<Db>, groups: Groups) -> Result<Json<Snapshot>, Error> {
    let ids: Vec<i64> = sqlx::query("SELECT id FROM todos")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    let mut positions = std::collections::BTreeMap::new();
    for group in
        std::iter::once(LIST_GROUP.to_owned()).chain(ids.iter().map(|id| format!("todo-{id}")))
    {
        if let Some(position) = groups.position(&group).await.map_err(Error::internal)? {
            positions.insert(group, position);
        }
    }
    let rows = sqlx::query("SELECT id, title FROM todos ORDER BY id")
        .fetch_all(db.pool())
        .await?;
    let todos = rows.iter().map(Todo::from_row).collect::<Result<_, _>>()?;
    Ok(Json(Snapshot { todos, positions }))
}

/// `todo.snapshot`'s reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Snapshot {
    /// Every todo, oldest first.
    pub todos: Vec<Todo>,
    /// The position of each group the rows reflect.
    pub positions: std::collections::BTreeMap<String, rohrpost::groups::Position>,
}

/// `echo` → the same data.
#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

/// Every handler of the demo: the ones above, `ping` (built in), `subscribe`,
/// `unsubscribe` and `presence` for subscribers with `token`, and `rohrpost.schema` (the
/// AsyncAPI document).
pub fn handlers(token: &str) -> Handlers {
    Handlers::collect()
        .merge(Subscriptions::token(token).with_presence().handlers())
        .with_schema()
}

/// The demo's AsyncAPI document (`--asyncapi`; committed as `examples/todo/asyncapi.json`).
pub fn asyncapi() -> Value {
    handlers(DEMO_TOKEN).asyncapi()
}

/// The demo's TypeScript declarations (`--typescript`; committed as
/// `examples/todo/rohrpost-types.d.ts`).
pub fn typescript() -> String {
    rohrpost::schema::typescript(&asyncapi())
}

/// The AsyncAPI document as `--asyncapi` prints it: indented JSON and a newline.
pub fn asyncapi_text() -> String {
    let mut text = serde_json::to_string_pretty(&asyncapi()).unwrap_or_default();
    text.push('\n');
    text
}

/// Who a connection is: the `user` query parameter of its URL (`/rohrpost/?user=ada`).
#[derive(Debug, Clone)]
pub struct Viewer(pub Option<String>);

/// Accepts every connection and keeps its `user` parameter.
async fn viewer(handshake: Handshake) -> Result<Accept, Refusal> {
    let user = handshake.query("user").map(|user| user.into_owned());
    Ok(Accept::new().with(Viewer(user)))
}

/// A connection's presence id: its `user`, else its own id.
pub fn viewer_id(conn: &Connection) -> String {
    conn.get::<Viewer>()
        .and_then(|viewer| viewer.0.clone())
        .unwrap_or_else(|| conn.id().to_string())
}

/// The demo's server settings: its handlers, groups, database and history, ready for more
/// settings before it is bound.
pub async fn builder(
    config: &Config,
    groups: Groups,
) -> Result<rohrpost::server::ServerBuilder, Box<dyn std::error::Error>> {
    let db = Db::connect(&config.database_url).await?;
    let builder = Server::builder()
        .handlers(handlers(&config.token))
        .groups(groups)
        .state(db)
        .authenticate(viewer)
        .presence(config.presence())
        .presence_id(viewer_id)
        .presence_info(|conn| json!({"user": viewer_id(conn)}));
    if config.history_size == 0 {
        return Ok(builder);
    }
    let history = History::groups(["todo-*", "todos-*"])
        .size(config.history_size)
        .ttl(HISTORY_TTL);
    Ok(builder.history(history))
}

/// The demo as a standalone rohrpost server, bound and ready to serve.
pub async fn server(config: &Config, groups: Groups) -> Result<Server, Box<dyn std::error::Error>> {
    let server = builder(config, groups)
        .await?
        .bind(config.addr.as_str())
        .await
        .map_err(|error: ServerError| Box::new(error) as Box<dyn std::error::Error>)?;
    Ok(server)
}

/// The demo as an axum app: the page at `/`, rohrpost at `/rohrpost/`, on one port.
pub async fn router(
    config: &Config,
    groups: Groups,
) -> Result<(axum::Router, rohrpost::server::Endpoint), Box<dyn std::error::Error>> {
    let endpoint = builder(config, groups).await?.endpoint()?;
    // The page is public, and so is the token in it: in the demo it only shows how
    // rohrpost.js passes `auth_jwt`; a real app would hand each user their own.
    let token = serde_json::to_string(&config.token).unwrap_or_else(|_| "\"\"".into());
    let page = PAGE.replace("\"{{TOKEN}}\"", &token);
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(page) }),
        )
        .route(
            "/rohrpost-resume.js",
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/javascript")],
                    RESUME_MODULE,
                )
            }),
        )
        .route("/rohrpost/", endpoint.route());
    Ok((router, endpoint))
}

/// The todo page: plain HTML and JavaScript, no build step.
pub const PAGE: &str = include_str!("../index.html");

/// The ES module that makes an unmodified rohrpost.js client resume its subscriptions
/// (served at `/rohrpost-resume.js`; the page uses it).
pub const RESUME_MODULE: &str = include_str!("../rohrpost-resume.js");

/// Serves the demo (the page at `/`, rohrpost at `/rohrpost/`) until Ctrl-C or SIGTERM, then
/// shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    if config.asyncapi {
        print!("{}", asyncapi_text());
        return Ok(());
    }
    if config.typescript {
        print!("{}", typescript());
        return Ok(());
    }
    let groups = config.groups().await?;
    let (router, endpoint) = router(&config, groups).await?;
    let listener = tokio::net::TcpListener::bind(config.addr.as_str()).await?;
    let addr = listener.local_addr()?;
    println!("rohrpost todo demo: ws://{addr}/rohrpost/ (the page: http://{addr}/)");
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            rohrpost::server::shutdown_signal().await;
            endpoint.shutdown().await;
        })
        .await?;
    Ok(())
}

/// Logs to stderr through `tracing`, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

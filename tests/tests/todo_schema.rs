//! The todo demo's contract: its committed AsyncAPI document and TypeScript declarations
//! match the code, pass the official AsyncAPI parser and `tsc --strict`, and the server
//! answers `rohrpost.schema` with the same document. (No handlers of its own here: the
//! document is the demo's alone.)

use std::path::{Path, PathBuf};
use std::process::Command;

use rohrpost_todo as app;
use serde_json::{json, Value};
use tests::{Client, TestServer};

fn todo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/todo")
}

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

const REGENERATE: &str = "cargo run --example todo -- --asyncapi > examples/todo/asyncapi.json; \
     cargo run --example todo -- --typescript > examples/todo/rohrpost-types.d.ts";

#[test]
fn the_committed_document_and_declarations_match_the_code() {
    let committed = std::fs::read_to_string(todo_dir().join("asyncapi.json")).unwrap();
    assert!(
        committed == app::asyncapi_text(),
        "examples/todo/asyncapi.json drifted from the handlers; regenerate it: {REGENERATE}"
    );
    let committed = std::fs::read_to_string(todo_dir().join("rohrpost-types.d.ts")).unwrap();
    assert!(
        committed == app::typescript(),
        "examples/todo/rohrpost-types.d.ts drifted from the handlers; regenerate it: {REGENERATE}"
    );
}

#[test]
fn the_demo_prints_its_document_and_declarations_and_exits() {
    let run = |flag: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_todo_node"))
            .arg(flag)
            .env("DATABASE_URL", "sqlite://unused-by-this-flag.sqlite")
            .output()
            .expect("the demo runs");
        assert!(output.status.success(), "{flag}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    assert_eq!(run("--asyncapi"), app::asyncapi_text());
    assert_eq!(run("--typescript"), app::typescript());
    assert!(
        !Path::new("unused-by-this-flag.sqlite").exists(),
        "printing opens no database"
    );
}

#[tokio::test]
async fn the_server_answers_rohrpost_schema_with_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let config = app::Config::local(app::sqlite_in(dir.path()));
    let server = app::server(&config, rohrpost::Groups::memory())
        .await
        .expect("demo starts");
    let server = TestServer::run(server);
    let mut client = Client::connect(&server.url).await;
    let reply = client
        .call(json!({"id": 1, "type": "rohrpost.schema"}))
        .await;
    assert_eq!(reply["type"], "rohrpost.schema");
    assert_eq!(reply["data"], app::asyncapi());
    server.shutdown().await;
}

/// The npm tools, installed by `cd tests/e2e && npm ci` (CI does, and sets
/// `ROHRPOST_REQUIRE_BROWSER=1` so that their absence fails instead of skipping).
fn node_tools() -> Option<PathBuf> {
    let e2e = e2e_dir();
    if e2e.join("node_modules/typescript").exists()
        && e2e.join("node_modules/@asyncapi/parser").exists()
    {
        return Some(e2e);
    }
    if std::env::var("ROHRPOST_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("tests/e2e/node_modules lacks typescript or @asyncapi/parser (cd tests/e2e && npm ci), and ROHRPOST_REQUIRE_BROWSER=1");
    }
    eprintln!("skipped: tests/e2e/node_modules lacks typescript or @asyncapi/parser (cd tests/e2e && npm ci)");
    None
}

#[test]
fn the_document_passes_the_official_asyncapi_parser() {
    let Some(e2e) = node_tools() else { return };
    let output = Command::new("node")
        .arg(e2e.join("asyncapi_check.mjs"))
        .arg(todo_dir().join("asyncapi.json"))
        .current_dir(&e2e)
        .output()
        .expect("node runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("asyncapi: valid"), "{text}");
    let doc: Value = serde_json::from_str(&app::asyncapi_text()).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
}

fn tsc(e2e: &Path, file: &str) -> std::process::Output {
    Command::new(e2e.join("node_modules/.bin/tsc"))
        .args([
            "--strict", "--noEmit", "--target", "es2022", "--module", "esnext",
        ])
        .args(["--moduleResolution", "bundler"])
        .arg(e2e.join("types").join(file))
        .current_dir(e2e)
        .output()
        .expect("tsc runs")
}

#[test]
fn typescript_that_uses_the_declarations_compiles_and_a_wrong_payload_does_not() {
    let Some(e2e) = node_tools() else { return };
    let good = tsc(&e2e, "typed_ok.ts");
    assert!(
        good.status.success(),
        "typed_ok.ts: {}",
        String::from_utf8_lossy(&good.stdout)
    );
    let wrong = tsc(&e2e, "typed_wrong.ts");
    let said = String::from_utf8_lossy(&wrong.stdout);
    assert!(!wrong.status.success(), "typed_wrong.ts compiled");
    assert!(
        said.contains("typed_wrong.ts(7,")
            && said.contains("Type 'number' is not assignable to type 'string'"),
        "{said}"
    );
}

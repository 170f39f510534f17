//! Handler failures are logged through `tracing` with the handler's name, and the client
//! sees only the generic error.

use std::io::Write;
use std::sync::{Arc, Mutex};

use rohrpost::prelude::*;
use serde_json::json;
use tests::TestServer;

#[rohrpost_handler("explode")]
async fn explode() -> Value {
    panic!("the secret detail of a panic")
}

#[rohrpost_handler("fail")]
async fn fail() -> Result<(), Error> {
    Err(Error::internal(std::io::Error::other(
        "the secret detail of an error",
    )))
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Never stored on any connection.
struct NeverStored;

#[rohrpost_handler("needs_extension")]
async fn needs_extension(_: rohrpost::Extension<NeverStored>) {}

#[tokio::test]
async fn panics_and_internal_errors_are_logged_with_the_handler_name() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "explode"})).await,
        json!({"id": 1, "type": "explode", "error": "Internal server error."})
    );
    assert_eq!(
        client.call(json!({"id": 2, "type": "fail"})).await,
        json!({"id": 2, "type": "fail", "error": "Internal server error."})
    );
    let text = log.text();
    let panicked = text
        .lines()
        .find(|line| line.contains("handler panicked"))
        .unwrap_or_else(|| panic!("no panic logged in:\n{text}"));
    assert!(panicked.contains("logging::explode"), "{panicked}");
    assert!(
        panicked.contains("the secret detail of a panic"),
        "{panicked}"
    );
    let failed = text
        .lines()
        .find(|line| line.contains("handler failed"))
        .unwrap_or_else(|| panic!("no error logged in:\n{text}"));
    assert!(failed.contains("logging::fail"), "{failed}");
    assert!(failed.contains("the secret detail of an error"), "{failed}");
    // A missing per-connection value: the client sees the generic error, the log names
    // the type and says where it comes from.
    assert_eq!(
        client
            .call(json!({"id": 3, "type": "needs_extension"}))
            .await,
        json!({"id": 3, "type": "needs_extension", "error": "Internal server error."})
    );
    let text = log.text();
    let missing = text
        .lines()
        .find(|line| line.contains("no per-connection value"))
        .unwrap_or_else(|| panic!("no missing extension logged in:\n{text}"));
    assert!(missing.contains("logging::NeverStored"), "{missing}");
    assert!(missing.contains("Accept::with"), "{missing}");
    let metrics = server.metrics.snapshot();
    assert_eq!((metrics.handler_panics, metrics.handler_errors), (1, 2));
}

//! The HTTP side of a connection: reading the upgrade request (standalone server), the
//! checks every handshake passes (capacity, origin, the authentication hook, shutdown), and
//! answering a refusal.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{create_response, write_response, Request};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::socket::LINGER;
use super::{Shared, MAX_REQUEST_HEAD};
use crate::handshake::{Accept, Handshake, Refusal};
use crate::metrics::Counter;
use crate::protocol::{self, SHUTTING_DOWN};

/// The checks on a handshake request, in order: capacity (503), origin (403), the
/// authentication hook (401/403, or 503 when it outlasts the handshake timeout), and
/// whether the server began shutting down meanwhile (503). Each refusal is counted here.
/// The path is checked by whoever routes the request.
pub(crate) async fn check_request(
    shared: &Shared,
    handshake: Handshake,
    over_capacity: bool,
) -> Result<Accept, Refusal> {
    let refuse = |counter: Counter, status: StatusCode, reason: String| {
        shared.metrics.add(counter);
        Err(Refusal::new(status, reason))
    };
    if over_capacity {
        return refuse(
            Counter::RefusedCapacity,
            StatusCode::SERVICE_UNAVAILABLE,
            protocol::TOO_MANY_CONNECTIONS.into(),
        );
    }
    if !shared.origins.allows(&handshake) {
        let origin = handshake.origin().unwrap_or_default();
        return refuse(
            Counter::RefusedOrigin,
            StatusCode::FORBIDDEN,
            protocol::origin_not_allowed(origin),
        );
    }
    let cookies_read = handshake.cookies_read.clone();
    let Some(authenticate) = &shared.authenticate else {
        return Ok(Accept::new());
    };
    let peer = handshake.peer;
    let verdict = tokio::time::timeout(
        shared.config.handshake_timeout,
        authenticate.call(handshake),
    );
    let accepted = match verdict.await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => {
            shared.metrics.add(Counter::RefusedAuth);
            return Err(refusal);
        }
        Err(_) => {
            tracing::warn!(%peer, timeout = ?shared.config.handshake_timeout, "the authentication hook timed out");
            return refuse(
                Counter::AuthTimeouts,
                StatusCode::SERVICE_UNAVAILABLE,
                protocol::AUTH_TIMED_OUT.into(),
            );
        }
    };
    if shared.origins.any && cookies_read.load(std::sync::atomic::Ordering::Relaxed) {
        warn_cookies_with_any_origin();
    }
    if shared.connections.shutting_down() {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN));
    }
    Ok(accepted)
}

/// The handshake over TCP: read the request, let tungstenite validate it (400), check the
/// path (404), then [`check_request`], and answer with 101 or the refusal. Reading the
/// request here, rather than in tungstenite's handshake, is what lets the authentication
/// hook be async. Reading the request and writing the answer share the handshake timeout;
/// the hook has its own.
pub(super) async fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    over_capacity: bool,
) -> Result<(WebSocketStream<TcpStream>, Accept), String> {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (request, rest) = match timeout_at(deadline, read_request(&mut stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(ReadError::Refused(refused))) => return Err(answer_refusal(stream, refused).await),
        Ok(Err(ReadError::Io(error))) => return Err(error.to_string()),
        Err(_) => return Err("handshake timed out".to_owned()),
    };
    let response = match create_response(&request) {
        Ok(response) => response,
        Err(error) => {
            let refused = Refusal::new(StatusCode::BAD_REQUEST, error.to_string());
            return Err(answer_refusal(stream, refused).await);
        }
    };
    if request.uri().path() != shared.config.path && !over_capacity {
        let reason = protocol::no_endpoint(request.uri().path());
        let refused = Refusal::new(StatusCode::NOT_FOUND, reason);
        return Err(answer_refusal(stream, refused).await);
    }
    let (parts, ()) = request.into_parts();
    let handshake = Handshake::new(parts.uri, parts.headers, peer);
    let accepted = match check_request(shared, handshake, over_capacity).await {
        Ok(accepted) => accepted,
        Err(refused) => return Err(answer_refusal(stream, refused).await),
    };
    let mut head = Vec::with_capacity(160);
    write_response(&mut head, &response).map_err(|error| error.to_string())?;
    let deadline = deadline.max(Instant::now() + LINGER);
    match timeout_at(deadline, stream.write_all(&head)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("handshake timed out".to_owned()),
    }
    let socket =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(shared.websocket))
            .await;
    Ok((socket, accepted))
}

/// Why reading a handshake request stopped.
enum ReadError {
    Io(std::io::Error),
    Refused(Refusal),
}

/// Reads the request head; returns the request and whatever bytes followed it. The head is
/// parsed only once its end (an empty line) has arrived, so a client that trickles bytes
/// costs a scan of the new ones, not a parse of the whole buffer per read.
async fn read_request(stream: &mut TcpStream) -> Result<(Request, Vec<u8>), ReadError> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let room = MAX_REQUEST_HEAD - buffer.len();
        if room == 0 {
            return Err(ReadError::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                protocol::head_too_large(MAX_REQUEST_HEAD),
            )));
        }
        // The head ends at an empty line: "\n\n" or "\n\r\n" (as httparse accepts), which
        // may straddle two reads.
        let scanned = buffer.len().saturating_sub(2);
        buffer.reserve(room.min(1024));
        let read = (&mut *stream)
            .take(room as u64)
            .read_buf(&mut buffer)
            .await
            .map_err(ReadError::Io)?;
        if read == 0 {
            return Err(ReadError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the client closed before finishing its handshake request",
            )));
        }
        let tail = &buffer[scanned..];
        let complete = tail.windows(2).any(|window| window == b"\n\n")
            || tail.windows(3).any(|window| window == b"\n\r\n");
        // Not HTTP at all shows in the first bytes: no need to wait for the empty line.
        if !complete && scanned > 0 {
            continue;
        }
        match Request::try_parse(&buffer) {
            Ok(Some((size, request))) => return Ok((request, buffer.split_off(size))),
            Ok(None) => {}
            Err(error) => {
                return Err(ReadError::Refused(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    error.to_string(),
                )))
            }
        }
    }
}

/// The most of a refused client's unread request that is read and thrown away, so that
/// closing the socket does not reset the connection before the client reads the refusal.
const REFUSAL_DRAIN: u64 = 64 * 1024;

/// Answers a refused handshake with its status and reason, and closes.
async fn answer_refusal(mut stream: TcpStream, refused: Refusal) -> String {
    let reason = refused.reason;
    let response = format!(
        "HTTP/1.1 {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{reason}",
        refused.status,
        reason.len(),
    );
    // The client may be gone already; the refusal is logged either way. Unread input
    // would make the kernel answer the close with a reset, which can destroy the
    // refusal in flight: read it (bounded in bytes and time) until the client hangs up.
    let send = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        tokio::io::copy(
            &mut (&mut stream).take(REFUSAL_DRAIN),
            &mut tokio::io::sink(),
        )
        .await
    };
    let _ = tokio::time::timeout(LINGER, send).await;
    format!("{}: {reason}", refused.status)
}

/// Warns, once per process, that an authentication hook reads cookies while any origin may
/// open a socket: any site the user visits could then act with the user's session.
fn warn_cookies_with_any_origin() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "the authentication hook reads cookies and allow_any_origin() is set: any web page the user visits can open a socket with the user's session (cross-site WebSocket hijacking); list the origins instead"
        );
    });
}

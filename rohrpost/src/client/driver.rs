//! The task that owns the socket: writes requests, reads and routes what comes back, pings,
//! and reconnects. The bookkeeping of what waits for which reply is `Requests`'s.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;

use super::pushes::Pushes;
use super::requests::{Outgoing, Requests, Routed};
use super::transport::{open, Socket};
use super::{ClientBuilder, Command, ConnectionState};
use crate::backoff::Backoff;
use crate::Message;

pub(super) struct Driver {
    settings: ClientBuilder,
    commands: mpsc::UnboundedReceiver<Command>,
    report: watch::Sender<ConnectionState>,
    requests: Requests,
    pushes: Pushes,
}

/// Why a connection ended.
enum Ended {
    Dropped,
    Closed,
}

/// A request as it goes out: the message, and the token beside it as rohrpost.js sends it.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(flatten)]
    message: &'a Message,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_jwt: Option<&'a str>,
}

impl Driver {
    pub(super) fn new(
        settings: ClientBuilder,
        commands: mpsc::UnboundedReceiver<Command>,
        report: watch::Sender<ConnectionState>,
        next_id: Arc<AtomicU64>,
    ) -> Self {
        let pushes = Pushes::new(settings.push_backlog);
        Self {
            pushes,
            settings,
            commands,
            report,
            requests: Requests::new(next_id),
        }
    }

    pub(super) async fn run(mut self, mut socket: Socket) {
        loop {
            match self.serve(&mut socket).await {
                Ended::Closed => {
                    let _ =
                        tokio::time::timeout(self.settings.call_timeout, socket.close(None)).await;
                    self.shut_down();
                    return;
                }
                Ended::Dropped => {
                    tracing::debug!("rohrpost connection dropped; reconnecting");
                    self.requests.connection_lost();
                    match self.reconnect().await {
                        Some(fresh) => socket = fresh,
                        None => {
                            self.shut_down();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits out the backoff between attempts, following commands meanwhile; `None` when
    /// the client was closed.
    async fn reconnect(&mut self) -> Option<Socket> {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.set_state(ConnectionState::Reconnecting { attempt });
            let pause = tokio::time::sleep(backoff.next_wait());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    command = self.commands.recv() => match command {
                        None | Some(Command::Close) => return None,
                        Some(command) => self.offline(command),
                    },
                }
            }
            let settings = self.settings.clone();
            let opening = async move { open(&settings).await };
            tokio::pin!(opening);
            loop {
                tokio::select! {
                    opened = &mut opening => match opened {
                        Ok(socket) => return Some(socket),
                        Err(_) => break,
                    },
                    command = self.commands.recv() => match command {
                        None | Some(Command::Close) => return None,
                        Some(command) => self.offline(command),
                    },
                }
            }
        }
    }

    fn offline(&mut self, command: Command) {
        match command {
            Command::Listen(listener) => self.pushes.listen(listener),
            command => self.requests.offline(command),
        }
    }

    fn shut_down(&mut self) {
        self.requests.shut_down();
        self.set_state(ConnectionState::Closed);
    }

    /// Publishes the state, waking watchers only when it changed.
    fn set_state(&self, state: ConnectionState) {
        self.report.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn frame(&self, outgoing: Outgoing) -> Frame {
        let mut message = Message::success(outgoing.message_type, outgoing.id);
        if let Some(data) = outgoing.data {
            message = message.with_data(data);
        }
        let wire = Wire {
            message: &message,
            auth_jwt: self.settings.token.as_deref(),
        };
        // A message of strings and JSON values always serializes.
        Frame::Text(serde_json::to_string(&wire).unwrap_or_default().into())
    }

    /// Writes one request, bounded by the call timeout (a server that stops reading).
    async fn write(&self, socket: &mut Socket, outgoing: Outgoing) -> Result<(), ()> {
        let frame = self.frame(outgoing);
        match tokio::time::timeout(self.settings.call_timeout, socket.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Writes what a command asks for, if anything.
    async fn online(&mut self, socket: &mut Socket, command: Command) -> Result<(), ()> {
        if let Command::Listen(listener) = command {
            self.pushes.listen(listener);
            return Ok(());
        }
        match self.requests.outgoing(command) {
            Some(outgoing) => self.write(socket, outgoing).await,
            None => Ok(()),
        }
    }

    async fn serve(&mut self, socket: &mut Socket) -> Ended {
        self.set_state(ConnectionState::Connected);
        let (resubscribes, waiting) = self.requests.reconnected();
        for outgoing in resubscribes {
            if self.write(socket, outgoing).await.is_err() {
                self.requests.requeue(waiting);
                return Ended::Dropped;
            }
        }
        let mut queue = waiting.into_iter();
        while let Some(command) = queue.next() {
            if self.online(socket, command).await.is_err() {
                // What was not sent yet waits for the next connection.
                self.requests.requeue(queue);
                return Ended::Dropped;
            }
        }
        let interval = self.settings.ping_interval;
        let mut last_heard = Instant::now();
        let mut last_ping: Option<Instant> = None;
        let ping_timer = tokio::time::sleep(interval);
        tokio::pin!(ping_timer);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return Ended::Closed,
                    Some(command) => {
                        if self.online(socket, command).await.is_err() {
                            return Ended::Dropped;
                        }
                    }
                },
                frame = socket.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        last_heard = Instant::now();
                        self.receive(&text);
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(_)) | None => return Ended::Dropped,
                },
                _ = &mut ping_timer => {
                    // As rohrpost.js: nothing came back within an interval of the last ping.
                    if last_ping.is_some_and(|sent| last_heard < sent) {
                        return Ended::Dropped;
                    }
                    self.requests.sweep();
                    let ping = Outgoing {
                        id: self.requests.own_id(),
                        message_type: crate::protocol::PING.into(),
                        data: None,
                    };
                    last_ping = Some(Instant::now());
                    if self.write(socket, ping).await.is_err() {
                        return Ended::Dropped;
                    }
                    ping_timer.as_mut().reset(Instant::now() + interval);
                }
            }
        }
    }

    /// Routes one text frame; what is neither a reply nor an update is a push.
    fn receive(&mut self, text: &str) {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(
                message = text,
                "the server sent something that is not a JSON object"
            );
            return;
        };
        if let Routed::Other(message) = self.requests.receive(message) {
            self.pushes.receive(message);
        }
    }
}

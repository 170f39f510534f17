//! A client's settings, and connecting with them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::driver::Driver;
#[cfg(feature = "client-tls")]
use super::rustls;
use super::transport::open;
#[cfg(feature = "client-tls")]
use super::transport::{default_tls_config, is_wss};
use super::{Client, ClientError, ConnectionState};

/// Durations shorter than this are raised to it: a zero ping interval or backoff would
/// spin.
const MIN_DURATION: Duration = Duration::from_millis(10);

/// Settings of a [`Client`]; every one has rohrpost.js's default or a safe one.
///
/// ```no_run
/// use std::time::Duration;
/// use rohrpost::client::Client;
///
/// # async fn run() -> Result<(), rohrpost::client::ClientError> {
/// let client = Client::builder("ws://127.0.0.1:8000/rohrpost/")
///     .token("hunter2") // sent as `auth_jwt`
///     .call_timeout(Duration::from_secs(3))
///     .ping_interval(Duration::from_secs(10))
///     .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(10))
///     .push_backlog(10_000)
///     .header("X-App-Version", "2.1")
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClientBuilder {
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) ping_interval: Duration,
    pub(super) call_timeout: Duration,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) push_backlog: usize,
    /// Handshake headers, cookies folded into one `Cookie` header at connect.
    pub(super) headers: Vec<(String, String)>,
    pub(super) cookies: Vec<(String, String)>,
    #[cfg(feature = "client-tls")]
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// The token sent as `auth_jwt` beside `data` in every message, as rohrpost.js does.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How often to ping, and how long a silence counts as a dead connection (default 5 s,
    /// as rohrpost.js).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(MIN_DURATION);
        self
    }

    /// How long a call waits for its reply (default 10 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout.max(MIN_DURATION);
        self
    }

    /// The wait before reconnecting: `min` after a drop, doubling up to `max` while attempts
    /// fail (default 100 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(MIN_DURATION);
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// How many pushes the client keeps for listeners that come later (default 1,000; see
    /// [`Client::on`](super::Client::on)): past it the oldest kept one is dropped, with a
    /// warning. 0 keeps none: only listeners that exist get a push.
    pub fn push_backlog(mut self, pushes: usize) -> Self {
        self.push_backlog = pushes;
        self
    }

    /// A header of the handshake request (`Authorization`, say), sent on every
    /// (re)connection. An invalid name or value fails [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), rohrpost::client::ClientError> {
    /// let client = rohrpost::client::Client::builder("ws://127.0.0.1:8000/rohrpost/")
    ///     .header("authorization", "Bearer s3cret")
    ///     .cookie("session", "abc123")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A cookie of the handshake request; all of them go in one `Cookie` header.
    pub fn cookie(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.cookies.push((name.into(), value.into()));
        self
    }

    /// The TLS settings for `wss://` URLs (feature `client-tls`): your own root
    /// certificates (a private CA), client certificates, or protocol versions. Default:
    /// rustls with the ring provider, trusting the Mozilla roots of webpki-roots.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use rohrpost::client::{rustls, Client};
    ///
    /// # async fn run(ca_der: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add(ca_der.into())?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let client = Client::builder("wss://internal.example/rohrpost/")
    ///     .tls_config(Arc::new(config))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "client-tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects; fails if the first connection cannot be made. Later drops reconnect.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let settings = self.with_default_tls()?;
        let socket = open(&settings).await?;
        let (commands, requests) = mpsc::unbounded_channel();
        let (report, state) = watch::channel(ConnectionState::Connected);
        let next_id = Arc::new(AtomicU64::new(1));
        let call_timeout = settings.call_timeout;
        let driver = Driver::new(settings, requests, report, next_id.clone());
        tokio::spawn(driver.run(socket));
        Ok(Client::new(commands, state, next_id, call_timeout))
    }

    /// Fills in the default TLS settings for a `wss://` URL without its own.
    #[cfg(feature = "client-tls")]
    fn with_default_tls(mut self) -> Result<Self, ClientError> {
        if self.tls.is_none() && is_wss(&self.url) {
            self.tls = Some(default_tls_config().map_err(|error| ClientError::Connect {
                url: self.url.clone(),
                reason: format!("cannot set up TLS: {error}"),
            })?);
        }
        Ok(self)
    }

    #[cfg(not(feature = "client-tls"))]
    fn with_default_tls(self) -> Result<Self, ClientError> {
        Ok(self)
    }
}

impl ClientBuilder {
    /// Settings for the endpoint at `url`, every other one at its default.
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            token: None,
            ping_interval: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            push_backlog: super::DEFAULT_PUSH_BACKLOG,
            headers: Vec::new(),
            cookies: Vec::new(),
            #[cfg(feature = "client-tls")]
            tls: None,
        }
    }
}

//! The WebSocket handshake as hooks see it: the origin allow-list and the authentication
//! hook, which accepts a connection with per-connection state or refuses it with 401/403
//! (or 503 when it cannot decide now).
//! The hook is async, so it can look a session up in a database or a cache before the
//! connection opens.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Uri};

use crate::type_map::TypeMap;

/// The client's handshake request, as the authentication hook sees it. The hook gets it by
/// value, so its future can keep it across `.await`s.
///
/// ```
/// use rohrpost::handshake::{Accept, Handshake, Refusal};
///
/// struct User(String);
///
/// async fn authenticate(handshake: Handshake) -> Result<Accept, Refusal> {
///     let token = handshake
///         .cookie("session")
///         .or_else(|| handshake.query("token"))
///         .ok_or_else(|| Refusal::unauthorized("log in first"))?;
///     // A real app would look the session up here, with `.await`.
///     if token != "s3cret" {
///         return Err(Refusal::forbidden("unknown session"));
///     }
///     Ok(Accept::new().with(User("ada".into())))
/// }
///
/// let builder = rohrpost::Server::builder().authenticate(authenticate);
/// ```
pub struct Handshake {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) peer: SocketAddr,
    /// Set when the hook reads a cookie: with any origin allowed, that deserves a warning.
    pub(crate) cookies_read: Arc<AtomicBool>,
}

impl Handshake {
    pub(crate) fn new(uri: Uri, headers: HeaderMap, peer: SocketAddr) -> Self {
        Self {
            uri,
            headers,
            peer,
            cookies_read: Arc::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(uri: Uri, headers: HeaderMap) -> Self {
        Self::new(uri, headers, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The request's URI (path and query).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Every header of the request.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The `Origin` header (browsers always send it).
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// A query parameter's value, percent-decoded as a form would encode it (`%C3%A9` is
    /// `é`, `+` a space); the first one when the name repeats.
    ///
    /// ```
    /// # use rohrpost::handshake::Handshake;
    /// # fn check(handshake: &Handshake) {
    /// // ws://host/rohrpost/?user=Zo%C3%AB+K
    /// assert_eq!(handshake.query("user").as_deref(), Some("Zoë K"));
    /// # }
    /// ```
    pub fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        form_urlencoded::parse(self.uri.query()?.as_bytes())
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// A cookie's value, from the `Cookie` headers, as sent (cookies have no one encoding).
    pub fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        self.cookies_read.store(true, Ordering::Relaxed);
        self.headers
            .get_all("cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|header| header.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(Cow::Borrowed(value))
            })
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("uri", &self.uri)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// An accepted handshake, with the per-connection state to start the connection with
/// (read it in handlers with [`Connection::get`](crate::Connection::get)).
#[derive(Debug, Default)]
pub struct Accept {
    pub(crate) state: TypeMap,
}

impl Accept {
    /// Accepts with no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a per-connection value (one per type).
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }
}

/// A refused handshake: the HTTP status and a short body for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// 401 Unauthorized: no or unreadable credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden: credentials that do not allow this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// 503 Service Unavailable: the credentials cannot be checked now (the session store is
    /// down, say); the client may try again later.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The reason, the body of the refusal.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// What the authentication hook returns, boxed so that the server can store any hook.
pub(crate) type Verdict = Pin<Box<dyn Future<Output = Result<Accept, Refusal>> + Send>>;

/// The hook as the server stores it: sees every handshake on the endpoint's path that
/// passed the origin check.
#[derive(Clone)]
pub(crate) struct AuthHook(Arc<dyn Fn(Handshake) -> Verdict + Send + Sync>);

impl AuthHook {
    pub(crate) fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Accept, Refusal>> + Send + 'static,
    {
        Self(Arc::new(move |handshake| Box::pin(hook(handshake))))
    }

    pub(crate) fn call(&self, handshake: Handshake) -> Verdict {
        (self.0)(handshake)
    }
}

impl fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthHook")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(uri: &str, cookie: &str) -> Handshake {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", cookie.parse().unwrap());
        Handshake::new(
            uri.parse().unwrap(),
            headers,
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn query_values_are_percent_decoded_and_cookies_are_as_sent() {
        let handshake = handshake(
            "/rohrpost/?user=Zo%C3%AB+K&token=a%26b&user=second&empty=&flag",
            "session=abc%20d; theme=dark",
        );
        assert_eq!(handshake.query("user").as_deref(), Some("Zoë K"));
        assert_eq!(handshake.query("token").as_deref(), Some("a&b"));
        assert_eq!(handshake.query("empty").as_deref(), Some(""));
        assert_eq!(handshake.query("flag").as_deref(), Some(""));
        assert_eq!(handshake.query("missing"), None);
        assert_eq!(handshake.cookie("session").as_deref(), Some("abc%20d"));
        assert_eq!(handshake.cookie("theme").as_deref(), Some("dark"));
    }
}

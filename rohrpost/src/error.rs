//! The error a handler returns, and how it reaches the client.

use std::fmt;

use serde_json::Value;

/// Why a handler failed; it becomes the error reply `{"id", "type", "error"}`.
///
/// There are two kinds, so that internal details never leak by accident:
///
/// - [`Error::new`] (and [`Error::json`]) carry an error the client is meant to see: its
///   text (or JSON value) is the reply's `error`.
/// - Any other error converted with `?` (a database error, an I/O error) is *internal*: it
///   is logged with the handler's name through `tracing`, and the client sees only
///   `"Internal server error."`.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Div { a: i64, b: i64 }
///
/// #[rohrpost_handler("div")]
/// async fn div(Data(d): Data<Div>) -> Result<i64, Error> {
///     if d.b == 0 {
///         return Err(Error::new("Division by zero."));
///     }
///     let config = std::fs::read_to_string("/nonexistent")?; // internal: logged, not shown
///     # let _ = config;
///     Ok(d.a / d.b)
/// }
/// ```
pub struct Error {
    kind: Kind,
    data: Option<Value>,
}

enum Kind {
    Client(Value),
    Internal(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// An error whose message the client sees as the reply's `error`.
    pub fn new(message: impl Into<String>) -> Self {
        Self::json(Value::String(message.into()))
    }

    /// An error whose `error` field is any JSON value (the original allows error content
    /// beside error messages).
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// let error = Error::json(json!({ "code": "E_TAKEN", "field": "name" }));
    /// assert_eq!(error.client_error()["code"], "E_TAKEN");
    /// assert!(!error.is_internal());
    /// ```
    pub fn json(error: Value) -> Self {
        Self {
            kind: Kind::Client(error),
            data: None,
        }
    }

    /// An internal error: logged, and shown to the client only as `"Internal server error."`.
    /// For errors `?` cannot convert by itself (a boxed error, a plain message), typically
    /// with `map_err(Error::internal)`.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// fn quota() -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    ///     Err("quota service unreachable".into())
    /// }
    ///
    /// let error = quota().map_err(Error::internal).unwrap_err();
    /// assert!(error.is_internal());
    /// assert_eq!(error.client_error(), "Internal server error."); // the cause is only logged
    /// ```
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            kind: Kind::Internal(error.into()),
            data: None,
        }
    }

    /// Adds a `data` field to the error reply.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// // → {"id": …, "type": …, "error": "Invalid title.", "data": {"field": "title", "max": 200}}
    /// let error = Error::new("Invalid title.").with_data(json!({ "field": "title", "max": 200 }));
    /// assert_eq!(error.client_error(), "Invalid title.");
    /// assert_eq!(error.data().unwrap()["field"], "title");
    /// ```
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Whether this error is internal (hidden from the client).
    pub fn is_internal(&self) -> bool {
        matches!(self.kind, Kind::Internal(_))
    }

    /// The reply's `error` field: the client's message, or `"Internal server error."`.
    pub fn client_error(&self) -> Value {
        match &self.kind {
            Kind::Client(value) => value.clone(),
            Kind::Internal(_) => Value::String(crate::protocol::INTERNAL_ERROR.to_owned()),
        }
    }

    /// The reply's `data` field, if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::internal(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Client(Value::String(message)) => f.write_str(message),
            Kind::Client(value) => write!(f, "{value}"),
            Kind::Internal(error) => write!(f, "internal error: {error}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        match &self.kind {
            Kind::Client(value) => s.field("client", value),
            Kind::Internal(error) => s.field("internal", error),
        };
        s.field("data", &self.data).finish()
    }
}

//! The protocol describes itself (the `schema` feature): an AsyncAPI 3.0 document and
//! TypeScript declarations made from the handlers.
//!
//! `#[rohrpost_handler]` records, beside each handler, the JSON Schema (through
//! [schemars](https://docs.rs/schemars) 1.x) of its request's `data` (from `Data<T>`; none
//! without a `Data` argument) and of its reply:
//!
//! | the handler returns | the reply's `data` |
//! | --- | --- |
//! | `Json<T>`, or `T` | `T` |
//! | `Result<R, Error>` | as for `R`, or the error form `{"id", "type", "error"}` |
//! | `Option<T>` | `T`, or left out |
//! | `()` | left out |
//! | `NoReply` | no reply at all |
//! | `Value`, `Message` | any JSON |
//!
//! A type without `JsonSchema` compiles all the same and is described as any JSON; the
//! document lists it under `x-rohrpost.untyped`. `#[derive(Notify)]` with `serialize`
//! records the object its group's `subscription-update` pushes carry.
//!
//! ```
//! use rohrpost::prelude::*;
//! use schemars::JsonSchema;
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct NewTodo {
//!     title: String,
//! }
//!
//! #[rohrpost_handler("todo.check")]
//! async fn check(Data(todo): Data<NewTodo>) -> Json<bool> {
//!     Json(!todo.title.is_empty())
//! }
//!
//! let doc = Handlers::collect().asyncapi();
//! assert_eq!(doc["asyncapi"], "3.0.0");
//! let requests = &doc["x-rohrpost"]["requests"];
//! assert_eq!(requests["todo.check"]["data"]["$ref"], "#/components/schemas/NewTodo");
//! assert_eq!(requests["todo.check"]["reply"]["type"], "boolean");
//!
//! let declarations = rohrpost::schema::typescript(&doc);
//! assert!(declarations.contains(r#""todo.check": { data: NewTodo; reply: boolean };"#));
//! ```
//!
//! Serve the document with [`Handlers::with_schema`](crate::Handlers::with_schema): a
//! `rohrpost.schema` request answers with it.

mod asyncapi;
mod typescript;

use std::marker::PhantomData;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};

pub use typescript::typescript;

/// The message type of the opt-in request that answers with the document.
pub const SCHEMA_REQUEST: &str = "rohrpost.schema";

/// A schema, or any JSON with the name of the type that has no `JsonSchema`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Described {
    schema: Value,
    untyped: Option<&'static str>,
}

impl Described {
    /// Any JSON, by choice (`Value`, `Message`).
    pub fn any() -> Self {
        Self {
            schema: json!({}),
            untyped: None,
        }
    }
}

/// Probes whether `T` has a schema: `(&&Probe::<T>::new()).describe(g)` takes
/// [`DescribeTyped`] when `T: JsonSchema`, else [`DescribeAny`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Probe<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> Probe<T> {
    /// A probe of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type with `JsonSchema`.
#[doc(hidden)]
pub trait DescribeTyped {
    /// `T`'s schema, its named parts added to `generator`.
    fn describe(&self, generator: &mut SchemaGenerator) -> Described;
}

impl<T: JsonSchema + ?Sized> DescribeTyped for &Probe<T> {
    fn describe(&self, generator: &mut SchemaGenerator) -> Described {
        Described {
            schema: generator.subschema_for::<T>().to_value(),
            untyped: None,
        }
    }
}

/// Any JSON, for a type without `JsonSchema`.
#[doc(hidden)]
pub trait DescribeAny {
    /// Any JSON, naming the type.
    fn describe(&self, generator: &mut SchemaGenerator) -> Described;
}

impl<T: ?Sized> DescribeAny for Probe<T> {
    fn describe(&self, _generator: &mut SchemaGenerator) -> Described {
        let name = std::any::type_name::<T>();
        Described {
            schema: json!({"description": format!("any JSON: `{name}` does not implement JsonSchema")}),
            untyped: Some(name),
        }
    }
}

/// What a handler's reply carries.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ReplyDescription {
    shape: Shape,
    optional: bool,
    errors: bool,
}

#[derive(Debug, Clone)]
enum Shape {
    /// `NoReply`.
    Nothing,
    /// A reply without `data` (`()`).
    Empty,
    /// `data` of this schema.
    Data(Described),
}

impl ReplyDescription {
    /// `NoReply`: no reply at all.
    pub fn no_reply() -> Self {
        Self {
            shape: Shape::Nothing,
            optional: false,
            errors: false,
        }
    }

    /// `()`: a reply without `data`.
    pub fn empty() -> Self {
        Self {
            shape: Shape::Empty,
            optional: false,
            errors: false,
        }
    }

    /// A reply whose `data` is described by `data`.
    pub fn data(data: Described) -> Self {
        Self {
            shape: Shape::Data(data),
            optional: false,
            errors: false,
        }
    }

    /// `Option<_>`: the `data` may be left out.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// `Result<_, Error>`: or the error form.
    pub fn or_error(mut self) -> Self {
        self.errors = true;
        self
    }
}

/// One handler, described.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct HandlerDescription {
    data: Option<Described>,
    reply: ReplyDescription,
}

impl HandlerDescription {
    /// A handler taking `data` (none: no `Data` argument) and replying `reply`.
    pub fn new(data: Option<Described>, reply: ReplyDescription) -> Self {
        Self { data, reply }
    }
}

/// The description of one `#[rohrpost_handler]`, registered beside its entry.
#[doc(hidden)]
#[derive(Debug)]
pub struct HandlerSchema {
    names: &'static [&'static str],
    describe: fn(&mut SchemaGenerator) -> HandlerDescription,
}

impl HandlerSchema {
    #[doc(hidden)]
    pub const fn new(
        names: &'static [&'static str],
        describe: fn(&mut SchemaGenerator) -> HandlerDescription,
    ) -> Self {
        Self { names, describe }
    }
}

inventory::collect!(HandlerSchema);

/// The object a `#[derive(Notify)]` type with `serialize` pushes, registered per group type.
#[doc(hidden)]
#[derive(Debug)]
pub struct PushSchema {
    group_type: &'static str,
    describe: fn(&mut SchemaGenerator) -> Described,
}

impl PushSchema {
    #[doc(hidden)]
    pub const fn new(
        group_type: &'static str,
        describe: fn(&mut SchemaGenerator) -> Described,
    ) -> Self {
        Self {
            group_type,
            describe,
        }
    }
}

inventory::collect!(PushSchema);

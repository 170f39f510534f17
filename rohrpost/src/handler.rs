//! The erased handler the registry stores, the [`Handler`] trait for building a handler set
//! by hand, and the helpers the `#[rohrpost_handler]` macro's output calls.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::extract::{FromRequest, RequestContext};
use crate::reply::{IntoReply, Reply};
use crate::Error;

/// A handler with its arguments erased, as the registry stores it.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(RequestContext) -> BoxFuture<'static, Reply> + Send + Sync>;

/// An `async fn` usable as a handler: every argument implements [`FromRequest`] and the
/// output implements [`IntoReply`]. Implemented for functions of up to 12 arguments.
///
/// `#[rohrpost_handler]` needs none of this; it is for building a
/// [`Handlers`](crate::Handlers) set by hand.
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments, runs the handler and builds its reply.
    fn call(&self, cx: RequestContext) -> BoxFuture<'static, Reply>;
}

/// Extracts one argument; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn extract<T: FromRequest>(cx: &RequestContext) -> Result<T, Error> {
    T::from_request(cx)
}

/// Extracts the last argument; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn extract_last<T: FromRequest>(cx: &mut RequestContext) -> Result<T, Error> {
    T::from_request_last(cx)
}

/// Turns a handler's output into its reply; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn into_reply<T: IntoReply>(output: T, cx: &RequestContext) -> Reply {
    output.into_reply(cx)
}

macro_rules! impl_handler {
    ($($arg:ident),* ; $last:ident) => {
        impl<F, Fut, Out, $($arg,)* $last> Handler<($($arg,)* $last,)> for F
        where
            F: Fn($($arg,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoReply,
            $($arg: FromRequest + Send + 'static,)*
            $last: FromRequest + Send + 'static,
        {
            #[allow(non_snake_case)]
            fn call(&self, mut cx: RequestContext) -> BoxFuture<'static, Reply> {
                let handler = self.clone();
                Box::pin(async move {
                    $(
                        let $arg = match extract::<$arg>(&cx) {
                            Ok(value) => value,
                            Err(error) => return Reply::error(error),
                        };
                    )*
                    let $last = match extract_last::<$last>(&mut cx) {
                        Ok(value) => value,
                        Err(error) => return Reply::error(error),
                    };
                    into_reply(handler($($arg,)* $last).await, &cx)
                })
            }
        }
    };
}

impl<F, Fut, Out> Handler<()> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Out> + Send + 'static,
    Out: IntoReply,
{
    fn call(&self, cx: RequestContext) -> BoxFuture<'static, Reply> {
        let handler = self.clone();
        Box::pin(async move { into_reply(handler().await, &cx) })
    }
}

impl_handler!(; A1);
impl_handler!(A1; A2);
impl_handler!(A1, A2; A3);
impl_handler!(A1, A2, A3; A4);
impl_handler!(A1, A2, A3, A4; A5);
impl_handler!(A1, A2, A3, A4, A5; A6);
impl_handler!(A1, A2, A3, A4, A5, A6; A7);
impl_handler!(A1, A2, A3, A4, A5, A6, A7; A8);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8; A9);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9; A10);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10; A11);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11; A12);

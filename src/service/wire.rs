//! What goes wrong on the wire before a handler runs, answered by one rule
//! (the proto files promise it; README "Errors"):
//!
//! - a message that does not decode is the caller's mistake:
//!   `INVALID_ARGUMENT`, naming the message type ([`Codec`], the codec every
//!   generated client and server uses; prost's own codec answers `INTERNAL`);
//! - a message over the size limit is `RESOURCE_EXHAUSTED`, naming the limit
//!   and the setting that raises it ([`LimitStatusLayer`]: tonic checks the
//!   size before any codec and answers `OUT_OF_RANGE`, a code no authzd
//!   handler returns, so the layer renames exactly those answers).
//!
//! Both keep the server serving: the call is refused, the connection stays.

use super::status::ServiceError;
use prost::Message;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::ProstCodec;

/// prost encoding and decoding, with decode errors as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec { _pd: PhantomData }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _pd: PhantomData }
    }
}

/// Decodes `U`; an undecodable message is `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct StrictDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("message");
            ServiceError::Undecodable(format!("the message is not a valid `{name}` (protobuf): {e}")).status()
        })
    }
}

/// Renames tonic's size-limit refusals (`OUT_OF_RANGE`) to
/// `RESOURCE_EXHAUSTED`, naming the limit and the setting.
#[derive(Debug, Clone, Copy)]
pub struct LimitStatusLayer {
    /// The largest message decoded, in bytes (`--max-message-bytes`).
    pub limit: usize,
}

impl<S> tower::Layer<S> for LimitStatusLayer {
    type Service = LimitStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitStatus { inner, limit: self.limit }
    }
}

/// The service of [`LimitStatusLayer`].
#[derive(Debug, Clone)]
pub struct LimitStatus<S> {
    inner: S,
    limit: usize,
}

impl<S, B, RB> tower::Service<http::Request<B>> for LimitStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Renamed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Renamed { inner: self.inner.call(req), limit: self.limit }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LimitStatus`].
    pub struct Renamed<F> {
        #[pin]
        inner: F,
        limit: usize,
    }
}

impl<F, RB, E> Future for Renamed<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &mut out {
            // Errors before the handler are sent trailers-only: in the headers.
            let out_of_range = resp.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
            if out_of_range {
                let status = ServiceError::ResourceExhausted(format!(
                    "the request message is larger than the limit of {} bytes (the server's --max-message-bytes); \
                     send smaller batches",
                    this.limit
                ))
                .status();
                // Both headers are set anew; a failure leaves tonic's answer.
                let _ = status.add_header(resp.headers_mut());
            }
        }
        Poll::Ready(out)
    }
}

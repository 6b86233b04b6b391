//! A site request's body on its way up, as nginx's `proxy_request_buffering` does for small ones:
//! the first [`REQUEST_BUFFER`] bytes are read before an upstream connection is taken, so a
//! client that announces a body and sends nothing holds no upstream permit. A longer body then
//! streams. Either way a client that pauses longer than `client_body_timeout` is cut off: 408
//! while buffering, the upstream request broken off once streaming.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ClientBodyIdle, IdleTimeout, ResponseBody};
use crate::error::{ProxyError, find_cause};

/// Bytes of a request body read before the upstream is asked.
pub const REQUEST_BUFFER: usize = 16 * 1024;

/// Reads `body` until it ends or [`REQUEST_BUFFER`] bytes have come, each frame within `idle`.
/// A body that ended is sent whole; a longer one streams on from where reading stopped, still
/// failing with [`ClientBodyIdle`] after a pause of `idle`.
pub async fn buffered<B>(body: B, idle: Duration) -> Result<ResponseBody, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = IdleTimeout::client(body, idle);
    let mut read = VecDeque::new();
    let mut held = 0;
    while held < REQUEST_BUFFER {
        match body.frame().await {
            None => {
                let whole: Prefixed<ResponseBody> = Prefixed { read, rest: None };
                return Ok(whole.boxed_unsync());
            }
            Some(Ok(frame)) => {
                held += frame.data_ref().map_or(0, Bytes::len);
                read.push_back(frame);
            }
            Some(Err(e)) => return Err(client_body_error(e)),
        }
    }
    Ok(Prefixed {
        read,
        rest: Some(body),
    }
    .boxed_unsync())
}

/// What a failed request body means for the client: a pause, a body past the route's limit, or
/// a body that broke off.
pub fn client_body_error(error: BoxError) -> ProxyError {
    client_body_fault(error.as_ref()).unwrap_or(ProxyError::ClientBodyBroken(error))
}

/// The client's fault in `error`'s chain, whether reading the body here or while it streamed
/// upstream: a pause past `client_body_timeout`, or a body past the route's limit.
pub fn client_body_fault(error: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    if let Some(ClientBodyIdle(idle)) = find_cause(error) {
        return Some(ProxyError::ClientBodyTimeout(*idle));
    }
    find_cause::<http_body_util::LengthLimitError>(error).map(|_| ProxyError::BodyTooLarge)
}

/// The frames already read, then the rest of the body (if it had not ended).
struct Prefixed<B> {
    read: VecDeque<Frame<Bytes>>,
    rest: Option<B>,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read: usize = self
            .read
            .iter()
            .map(|f| f.data_ref().map_or(0, Bytes::len))
            .sum();
        let read = read as u64;
        match &self.rest {
            None => SizeHint::with_exact(read),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(read + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(read + upper);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, Limited};

    /// A body of these frames, one at a time.
    fn frames(chunks: Vec<Frame<Bytes>>) -> Prefixed<ResponseBody> {
        Prefixed {
            read: chunks.into(),
            rest: None,
        }
    }

    /// A body that never sends anything.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_short_body_is_read_whole_and_a_long_one_streams_on_intact() {
        for len in [
            0,
            10,
            REQUEST_BUFFER - 1,
            REQUEST_BUFFER,
            5 * REQUEST_BUFFER + 3,
        ] {
            let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = sent
                .chunks(1000)
                .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                .collect();
            let body = buffered(frames(chunks), Duration::from_secs(5))
                .await
                .expect("read");
            let got = body.collect().await.expect("collected").to_bytes();
            assert_eq!(&got[..], &sent[..], "{len} bytes");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_a_408_and_an_oversized_one_a_413() {
        let error = buffered(Silent, Duration::from_secs(3))
            .await
            .expect_err("stalled");
        assert!(matches!(error, ProxyError::ClientBodyTimeout(_)), "{error}");
        let oversized = Limited::new(Full::new(Bytes::from(vec![0u8; 100])), 10);
        let error = buffered(oversized, Duration::from_secs(3))
            .await
            .expect_err("oversized");
        assert!(matches!(error, ProxyError::BodyTooLarge), "{error}");
    }
}

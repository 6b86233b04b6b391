//! Response bodies: the boxed type every handler returns, an idle timeout for upstream bodies,
//! and a meter that writes the access log line when a body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response signgate sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The upstream paused longer than the route's `body_idle_timeout` in mid-body.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for more than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

/// The client paused longer than `client_body_timeout` while sending a request body.
#[derive(Debug, thiserror::Error)]
#[error("client request body idle for more than {0:?}")]
pub struct ClientBodyIdle(pub Duration);

/// Fails a body that goes quiet for longer than `idle` between frames.
///
/// The timer is armed only when the body has nothing to give (made on the first such pause,
/// re-armed on the next): a body whose frames are ready when asked for, as a small file's
/// usually are, never touches the timer wheel.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Made on the first pause.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` runs for the current pause.
    armed: bool,
    /// The error a pause gives: whose body it was.
    error: fn(Duration) -> BoxError,
}

impl<B> IdleTimeout<B> {
    /// Wraps an upstream's body, failing it with [`BodyIdleTimeout`].
    pub fn new(inner: B, idle: Duration) -> Self {
        Self::failing_with(inner, idle, |idle| BodyIdleTimeout(idle).into())
    }

    /// Wraps a client's request body, failing it with [`ClientBodyIdle`].
    pub fn client(inner: B, idle: Duration) -> Self {
        Self::failing_with(inner, idle, |idle| ClientBodyIdle(idle).into())
    }

    fn failing_with(inner: B, idle: Duration, error: fn(Duration) -> BoxError) -> Self {
        Self {
            inner,
            idle,
            sleep: None,
            armed: false,
            error,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // A timer left registered with an old deadline may wake the task once for
                // nothing; it is re-armed before it can fail the body.
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let sleep = match &mut this.sleep {
                    Some(sleep) if this.armed => sleep,
                    Some(sleep) => {
                        sleep
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.idle);
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(this.idle))),
                };
                this.armed = true;
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err((this.error)(this.idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that keeps `guard` alive until the body is dropped: the upstream connection permit
/// stays taken while the response streams on that connection.
pub struct Holding<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Holding<B, G> {
    /// Wraps `inner`, keeping `guard` until the body is dropped.
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<B, G> Body for Holding<B, G>
where
    B: Body + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The reader of a [`pumped`] body stopped pulling for longer than its stall limit.
#[derive(Debug, thiserror::Error)]
#[error("response abandoned: the client read nothing for {0:?}")]
pub struct ReaderStalled(pub Duration);

/// Streams `body` from a task of its own through a one-frame channel, so that a reader which
/// stops pulling is noticed even when nothing polls the body: an HTTP/2 stream whose flow-control
/// window stays shut is never polled, so no timer inside the body would fire. When a frame has
/// waited `stall` for the reader, the task drops `body` (and with it the upstream connection and
/// its permit), and the reader then gets [`ReaderStalled`].
pub fn pumped(mut body: ResponseBody, stall: Duration) -> ResponseBody {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::clone(&finished);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            // HTTP/2 takes a whole frame into its send buffer as soon as the stream has a byte
            // of window: a large one (a big upstream chunk) would sit there, out of reach of
            // the stall timer. Handed over in pieces, all but one piece waits here, where a
            // stall drops it.
            let mut frame = Some(frame);
            while let Some(next) = frame.take() {
                let piece = match next {
                    Ok(data_frame) => match data_frame.into_data() {
                        Ok(mut data) if data.len() > PUMPED_PIECE => {
                            let piece = data.split_to(PUMPED_PIECE);
                            frame = Some(Ok(Frame::data(data)));
                            Ok(Frame::data(piece))
                        }
                        Ok(data) => Ok(Frame::data(data)),
                        Err(other) => Ok(other),
                    },
                    Err(e) => Err(e),
                };
                match tokio::time::timeout(stall, tx.send(piece)).await {
                    Ok(Ok(())) => {}
                    // The reader went away: nothing more to do.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!(?stall, "client stopped reading; response abandoned");
                        return;
                    }
                }
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    Pumped {
        frames: rx,
        finished,
        stall,
    }
    .boxed_unsync()
}

/// The largest data frame [`pumped`] hands over at once (HTTP/2's default frame size).
const PUMPED_PIECE: usize = 16 * 1024;

/// The reading end of [`pumped`].
struct Pumped {
    frames: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    /// Set by the task when the body ended normally, before the channel closes.
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stall: Duration,
}

impl Body for Pumped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.frames.poll_recv(cx)) {
            Some(frame) => Poll::Ready(Some(frame)),
            None if self.finished.load(std::sync::atomic::Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Ready(Some(Err(ReaderStalled(self.stall).into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pumped_hands_a_large_frame_over_in_pieces_of_at_most_16_kib() {
        let whole: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = pumped(
            Full::new(whole.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            Duration::from_secs(5),
        );
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            pieces.push(frame.expect("frame").into_data().expect("data"));
        }
        assert!(
            pieces.iter().all(|p| p.len() <= PUMPED_PIECE),
            "{}",
            pieces.len()
        );
        assert_eq!(pieces.len(), 100_000usize.div_ceil(PUMPED_PIECE));
        assert_eq!(pieces.concat(), whole.to_vec());
    }
}

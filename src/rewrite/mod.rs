//! Rewriting bare CDN URLs into signed ones in site answers, one file per place a URL hides:
//! [`html`] (pages, SVG, feeds; lol_html), [`css`] and [`json`] (signed strings spliced into the
//! bytes as sent), all while they stream; [`headers`] (`Location`, `Content-Location`,
//! `Link`); [`freshness`] caps how long a cache may keep a rewritten answer, and [`url`]
//! recognises and signs the URLs. Bodies pass through a [`Transform`], decoded by
//! [`decompress`] on the way in and encoded again by [`compress`] on the way out.

pub mod compress;
pub mod css;
pub mod decompress;
pub mod freshness;
pub mod headers;
pub mod html;
pub mod json;
pub mod script;
pub mod url;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ResponseBody};
use crate::config::OnOverflow;
use compress::{Encoder, EncoderShare};
pub use css::CssTransform;
use decompress::{Decompressor, Encoding};
pub use freshness::cap_freshness;
pub use headers::rewrite_url_headers;
pub use html::{HtmlTransform, Markup};
pub use json::{JsonTransform, sign_json_text};
pub use script::ScriptTransform;
pub use url::{CdnUrlSigner, SiteUrls};

/// A step applied to a body chunk by chunk.
pub trait Transform: Send {
    /// Takes the next input chunk; returns output ready so far (possibly empty). A
    /// [`RewriteOverflow`] error means the chunk was not taken, and `finish` gives back what
    /// is held as it came in.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError>;
    /// The input ended; returns the rest of the output.
    fn finish(&mut self) -> Result<Vec<u8>, BoxError>;
}

/// Input a transform cannot rewrite (a tag too long to hold): the answer continues unmodified
/// from there, or is cut off, as the route's `rewrite_overflow` says.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RewriteOverflow(pub &'static str);

/// How much of an answer was rewritten, for its access log line: shared between the body and
/// the log.
#[derive(Debug, Clone, Default)]
pub struct RewriteMark(Arc<AtomicU8>);

impl RewriteMark {
    const FULL: u8 = 0;
    const PARTIAL: u8 = 1;
    const ABORTED: u8 = 2;

    /// `full`, `partial` (the rest passed unmodified) or `aborted`.
    pub fn as_str(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::FULL => "full",
            Self::PARTIAL => "partial",
            _ => "aborted",
        }
    }

    fn set(&self, value: u8) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A body whose data is decoded (in bounded slices) and passes through a [`Transform`].
/// Trailers are dropped.
///
/// Each poll sends on at most one slice's output, so a page that decodes to gigabytes streams
/// with memory flat. Past `limit` decoded bytes, or input the transform cannot take, the
/// transform is finished and the rest passes unmodified (its URLs unsigned), or the body ends
/// with an error, as `on_overflow` says: it never ends cleanly short.
pub struct TransformBody<T> {
    inner: ResponseBody,
    decoder: Decompressor,
    transform: T,
    /// Decoded bytes so far, and the most that are transformed.
    decoded: u64,
    limit: u64,
    on_overflow: OnOverflow,
    mark: RewriteMark,
    /// Past the limit: decoded bytes pass as they are.
    passing: bool,
    input_ended: bool,
    done: bool,
}

impl<T: Transform> TransformBody<T> {
    /// Wraps `inner`, already decoded, transforming all of it.
    pub fn new(inner: ResponseBody, transform: T) -> Self {
        Self::decoding(
            inner,
            Decompressor::new(Encoding::Identity),
            transform,
            u64::MAX,
        )
    }

    /// Wraps `inner`, decoded by `decoder`, transforming its first `limit` decoded bytes.
    pub fn decoding(inner: ResponseBody, decoder: Decompressor, transform: T, limit: u64) -> Self {
        Self {
            inner,
            decoder,
            transform,
            decoded: 0,
            limit,
            on_overflow: OnOverflow::Pass,
            mark: RewriteMark::default(),
            passing: false,
            input_ended: false,
            done: false,
        }
    }

    /// What happens when the answer cannot be rewritten in full, and where its access log
    /// line learns which it was.
    pub fn on_overflow(mut self, on_overflow: OnOverflow, mark: RewriteMark) -> Self {
        self.on_overflow = on_overflow;
        self.mark = mark;
        self
    }

    /// Transforms one decoded slice, or passes it once past the limit.
    fn transform_slice(&mut self, slice: Vec<u8>) -> Result<Vec<u8>, BoxError> {
        if self.passing {
            return Ok(slice);
        }
        self.decoded = self
            .decoded
            .saturating_add(u64::try_from(slice.len()).unwrap_or(u64::MAX));
        if self.decoded > self.limit {
            return self.overflow("the answer is larger than rewrite_limit", slice);
        }
        match self.transform.push(&slice) {
            Err(e) => match e.downcast::<RewriteOverflow>() {
                Ok(overflow) => self.overflow(overflow.0, slice),
                Err(e) => Err(e),
            },
            done => done,
        }
    }

    /// The transform can take no more: the rest passes unmodified, or the body ends in error.
    fn overflow(&mut self, reason: &'static str, slice: Vec<u8>) -> Result<Vec<u8>, BoxError> {
        if self.on_overflow == OnOverflow::Abort {
            tracing::warn!(
                reason,
                "answer cut off: it cannot be rewritten in full and rewrite_overflow = \"abort\""
            );
            return Err(Box::new(RewriteOverflow(reason)));
        }
        self.passing = true;
        self.mark.set(RewriteMark::PARTIAL);
        tracing::warn!(
            reason,
            limit = self.limit,
            "the rest of the answer passes unmodified, its URLs unsigned"
        );
        let mut out = self.transform.finish()?;
        out.extend_from_slice(&slice);
        Ok(out)
    }

    /// The output once input and decoder are both drained.
    fn end(&mut self) -> Result<Vec<u8>, BoxError> {
        self.done = true;
        let rest = self.decoder.finish()?;
        let mut out = if rest.is_empty() {
            Vec::new()
        } else {
            self.transform_slice(rest)?
        };
        if !self.passing {
            out.extend(self.transform.finish()?);
        }
        Ok(out)
    }
}

impl<T: Transform + Unpin> Body for TransformBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let output = match this.decoder.next_slice() {
                Err(e) => Err(e.into()),
                Ok(Some(slice)) => this.transform_slice(slice),
                Ok(None) if this.input_ended => this.end(),
                Ok(None) => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            this.decoder.feed(&data);
                        }
                        continue;
                    }
                    Some(Err(e)) => Err(e),
                    None => {
                        this.input_ended = true;
                        continue;
                    }
                },
            };
            match output {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes))))),
                Err(e) => {
                    this.done = true;
                    this.mark.set(RewriteMark::ABORTED);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body compressed by an [`Encoder`] piece by piece: each data frame of `inner` leaves
/// compressed and flushed at once, so streaming stays streaming. A body that ends in error
/// ends in that error without the encoding's end, so the client sees it cut short.
pub struct CompressBody<B> {
    inner: B,
    /// `None` once the encoding is ended (or the body failed).
    encoder: Option<Encoder>,
    /// What the encoder takes of the worker's budget, until the body is dropped.
    _share: EncoderShare,
}

impl<B> CompressBody<B> {
    /// Compresses `inner` with `encoder`, holding `share` of the worker's budget meanwhile.
    pub fn new(inner: B, encoder: Encoder, share: EncoderShare) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            _share: share,
        }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for CompressBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            let compressed = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => encoder.push(&data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => match this.encoder.take().map(Encoder::finish) {
                    Some(Ok(end)) if end.is_empty() => return Poll::Ready(None),
                    Some(end) => end,
                    None => return Poll::Ready(None),
                },
            };
            return Poll::Ready(Some(match compressed {
                Ok(bytes) => Ok(Frame::data(Bytes::from(bytes))),
                Err(e) => {
                    this.encoder = None;
                    Err(e.into())
                }
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Transform for Box<dyn Transform> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        (**self).push(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        (**self).finish()
    }
}

/// Two transforms, one after the other.
pub struct Chain<A, B>(pub A, pub B);

impl<A: Transform, B: Transform> Transform for Chain<A, B> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        let middle = self.0.push(chunk)?;
        if middle.is_empty() {
            return Ok(middle);
        }
        self.1.push(&middle)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        let middle = self.0.finish()?;
        let mut out = if middle.is_empty() {
            Vec::new()
        } else {
            self.1.push(&middle)?
        };
        out.extend(self.1.finish()?);
        Ok(out)
    }
}

impl Transform for Decompressor {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        Ok(Decompressor::push(self, chunk)?)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(Decompressor::finish(self)?)
    }
}

/// What the rewriter tests share: a handle, an instant, a signer and CDN URLs.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;

    use super::{CdnUrlSigner, SiteUrls};

    pub const H: &str = "KW9EJhYtS6y48Whm2S6D";
    pub const NOW: u64 = 1_800_000_000;

    pub fn signer() -> Arc<CdnUrlSigner> {
        SiteUrls::fixture("", "s").at(NOW)
    }

    pub fn cdn(path: &str) -> String {
        format!("https://cdn.filestackcontent.com/{path}")
    }
}

//! Rewriting bare CDN URLs into signed ones in site answers, one file per place a URL hides:
//! [`html`] while it streams (lol_html), [`json`] while it streams (signed strings spliced into
//! the bytes as sent), [`headers`] (`Location`, `Content-Location`, `Link`); [`freshness`] caps
//! how long a cache may keep a rewritten answer, and [`url`] recognises and signs the URLs.
//! Bodies pass through a [`Transform`] chain.

pub mod decompress;
pub mod freshness;
pub mod headers;
pub mod html;
pub mod json;
pub mod url;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ResponseBody};
use decompress::{Decompressor, Encoding};
pub use freshness::cap_freshness;
pub use headers::rewrite_url_headers;
pub use html::HtmlTransform;
pub use json::{JsonTransform, sign_json_text};
pub use url::{CdnUrlSigner, SiteUrls};

/// A step applied to a body chunk by chunk.
pub trait Transform: Send {
    /// Takes the next input chunk; returns output ready so far (possibly empty).
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError>;
    /// The input ended; returns the rest of the output.
    fn finish(&mut self) -> Result<Vec<u8>, BoxError>;
}

/// A body whose data is decoded (in bounded slices) and passes through a [`Transform`].
/// Trailers are dropped.
///
/// Each poll sends on at most one slice's output, so a page that decodes to gigabytes streams
/// with memory flat. Past `limit` decoded bytes the transform is finished and the rest passes
/// unmodified (its URLs unsigned), so no answer is ever cut short for being large.
pub struct TransformBody<T> {
    inner: ResponseBody,
    decoder: Decompressor,
    transform: T,
    /// Decoded bytes so far, and the most that are transformed.
    decoded: u64,
    limit: u64,
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
            passing: false,
            input_ended: false,
            done: false,
        }
    }

    /// Transforms one decoded slice, or passes it once past the limit.
    fn transform_slice(&mut self, slice: Vec<u8>) -> Result<Vec<u8>, BoxError> {
        if self.passing {
            return Ok(slice);
        }
        self.decoded = self
            .decoded
            .saturating_add(u64::try_from(slice.len()).unwrap_or(u64::MAX));
        if self.decoded <= self.limit {
            return self.transform.push(&slice);
        }
        self.passing = true;
        tracing::warn!(
            limit = self.limit,
            "answer larger than rewrite_limit: the rest passes unmodified, its URLs unsigned"
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

//! The access log: one line per request, written when its body ends or is dropped; the path
//! as logged (credentials redacted); errors logged at the level their blame sets.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::activity::InFlight;
use crate::body::{BoxError, ResponseBody};
use crate::error::{Blame, ProxyError};
use crate::metrics::RequestMetrics;
use crate::mode::verify::VerifyMark;
use crate::request_id::RequestId;
use crate::rewrite::RewriteMark;

/// What the access log line says about one request, filled in as it is answered.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Request method.
    pub method: http::Method,
    /// Route name, or `-` when none matched.
    pub route: Arc<str>,
    /// The request target as received: logged as its path with any credentials removed
    /// ([`redact_path`]), worked out only when the line is written.
    pub target: http::Uri,
    /// Response status.
    pub status: u16,
    /// `hit`, `miss` or `-`.
    pub cache: &'static str,
    /// How much of a site answer was rewritten, when its body was: logged as `full`,
    /// `partial` (the rest passed unmodified) or `aborted`; `-` for any other answer.
    pub rewrite: Option<RewriteMark>,
    /// When the request arrived.
    pub started: Instant,
    /// The client's socket address, as signgate's listener saw it.
    pub peer: SocketAddr,
    /// The upstream's status, when an upstream answered (see [`UpstreamStatus`]).
    pub upstream_status: Option<http::StatusCode>,
    /// The request's id, as sent upstream and back to the client.
    pub request_id: RequestId,
    /// A verify route's outcome: `valid` or the failed check; `-` on other routes, or when no
    /// check was made (a 405, a CORS preflight).
    pub verify: Option<VerifyMark>,
}

/// The status the upstream (a proxy route's CDN, a site route's origin) answered with: put in
/// the response's extensions by [`crate::upstream::UpstreamClient::send`], taken out for the
/// access log, whatever signgate made of the answer (a CDN error becomes a short body of its
/// own, a WebSocket's 101 a 200 over HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamStatus(pub http::StatusCode);

/// Counts the bytes of a response body and, when it ends or is dropped, writes the access log
/// line (a client that goes away mid-body is logged as `complete=false`) and counts the request
/// in its route's metrics.
pub struct Metered {
    inner: ResponseBody,
    bytes: u64,
    finished: bool,
    /// The body ended in an error: whatever the inner body says after, it is incomplete.
    failed: bool,
    log: AccessLog,
    /// The route's request metrics (or those of requests no route took).
    metrics: Arc<RequestMetrics>,
    /// Keeps the request counted on its connection until the body is done or dropped.
    in_flight: Option<InFlight>,
}

impl Metered {
    /// Wraps a response body, to be counted in `metrics`.
    pub fn new(inner: ResponseBody, log: AccessLog, metrics: Arc<RequestMetrics>) -> Self {
        Self {
            inner,
            bytes: 0,
            finished: false,
            failed: false,
            log,
            metrics,
            in_flight: None,
        }
    }

    /// Holds `in_flight` until the body is done or dropped, so the connection is not idle
    /// while its answer is still being sent.
    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            None => this.finished = true,
            Some(Err(_)) => this.failed = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let log = &self.log;
        let complete = !self.failed && (self.finished || self.inner.is_end_stream());
        let elapsed = log.started.elapsed();
        self.metrics.record(log.status, self.bytes, elapsed);
        tracing::info!(
            target: "signgate::access",
            method = %printable(log.method.as_str(), METHOD_LOG_MAX),
            route = %log.route,
            path = %redact_path(log.target.path()),
            status = log.status,
            bytes = self.bytes,
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            cache = %log.cache,
            rewrite = %log.rewrite.as_ref().map_or("-", RewriteMark::as_str),
            complete,
            peer = %log.peer,
            // Absent when no upstream answered.
            upstream_status = log.upstream_status.map(|s| s.as_u16()),
            request_id = %log.request_id,
            verify = %log.verify.map_or("-", VerifyMark::as_str),
        );
    }
}

/// Logs a request's failure at the level its blame sets.
pub fn log_error(error: &ProxyError, route: &str) {
    // Source errors may name hosts and reasons, never credentials: upstream URLs are not in them.
    // The whole chain: wrappers (hyper-util's "client error (SendRequest)") hide the reason.
    let mut reasons = Vec::new();
    let mut next = std::error::Error::source(error);
    while let Some(reason) = next {
        reasons.push(reason.to_string());
        next = reason.source();
    }
    let source = (!reasons.is_empty()).then(|| reasons.join(": "));
    match error.blame() {
        Blame::Client => tracing::debug!(route, error = %error, "client error"),
        Blame::Upstream => tracing::warn!(route, error = %error, source, "upstream error"),
        Blame::Internal => tracing::error!(route, error = %error, source, "internal error"),
    }
}

/// Longest method logged, in characters.
const METHOD_LOG_MAX: usize = 32;
/// Longest path logged, in bytes before escaping.
const PATH_LOG_MAX: usize = 512;

/// The path as logged: `security=` task contents replaced, the query never logged, cut at
/// 512 bytes and escaped by [`printable`].
pub fn redact_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(PATH_LOG_MAX));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        // Percent-decoded as well (twice): a verifier that decodes before it reads
        // `%73ecurity=p:…` must not find a credential the log kept.
        let once = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let twice = percent_encoding::percent_decode_str(&once).decode_utf8_lossy();
        if [segment, &once, &twice]
            .iter()
            .any(|s| crate::filelink::is_security_task(s))
        {
            out.push_str("security=<redacted>");
        } else {
            out.push_str(segment);
        }
        if out.len() > PATH_LOG_MAX {
            break;
        }
    }
    printable(&out, PATH_LOG_MAX)
}

/// `text` safe to write into one log line: printable ASCII as it is, a backslash doubled,
/// everything else (controls, line and paragraph separators, bidi controls, any non-ASCII)
/// as `\u{…}`, so a request can neither forge a line nor hide what it sent; cut after `max`
/// characters of input with `...` marking the cut (the line stays ASCII).
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_carry_no_credentials() {
        assert_eq!(
            redact_path("/img/security=p:abc,s:def/KW9EJhYtS6y48Whm2S6D"),
            "/img/security=<redacted>/KW9EJhYtS6y48Whm2S6D"
        );
        for encoded in [
            "%73ecurity=p:abc,s:def",
            "security%3Dp:abc,s:def",
            "%2573ecurity=p:a,s:d",
        ] {
            let logged = redact_path(&format!("/v/{encoded}/KW9EJhYtS6y48Whm2S6D"));
            assert_eq!(
                logged, "/v/security=<redacted>/KW9EJhYtS6y48Whm2S6D",
                "{encoded}"
            );
        }
        assert!(redact_path(&"/a".repeat(1000)).len() < 520);
    }

    #[test]
    fn logged_fields_cannot_forge_lines_or_run_on() {
        assert_eq!(
            printable("/a\nb\u{2028}c\u{85}d\u{202e}e\\", 100),
            "/a\\u{a}b\\u{2028}c\\u{85}d\\u{202e}e\\\\"
        );
        assert_eq!(
            printable(&"M".repeat(60_000), 32),
            format!("{}...", "M".repeat(32))
        );
        assert_eq!(printable("é", 10), "\\u{e9}");
    }
}

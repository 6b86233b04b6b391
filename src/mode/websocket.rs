//! WebSockets through a site route: the handshake is forwarded with its `Upgrade`, the site's
//! `101` goes back to the client, and from then on the two connections are joined byte for byte
//! (never parsed or rewritten) until either side closes or both stay silent for
//! `websocket_idle_timeout`. An HTTP/2 client's extended `CONNECT` (RFC 8441) becomes an
//! HTTP/1.1 handshake towards the site, and the site's `101` a `200` on the stream. Other
//! upgrades (`h2c` among them) are not forwarded: their `Upgrade` is stripped like any
//! hop-by-hop header.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::body::ResponseBody;

/// Whether a request asks to become a WebSocket: an HTTP/1.1 `GET` with `Connection: upgrade`
/// and `websocket` among its `Upgrade` protocols.
pub fn is_handshake(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    method == Method::GET
        && version == Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// How a client asked for a WebSocket.
pub enum Handshake {
    /// An HTTP/1.1 upgrade: the site's `101` goes back as it is.
    Http1(OnUpgrade),
    /// An HTTP/2 extended `CONNECT` (RFC 8441): the site's `101` goes back as `200`.
    H2(OnUpgrade),
}

/// Whether a request is an HTTP/2 extended `CONNECT` for a WebSocket (RFC 8441).
pub fn is_h2_connect(method: &Method, version: Version, extensions: &http::Extensions) -> bool {
    method == Method::CONNECT
        && version == Version::HTTP_2
        && extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turns an RFC 8441 request's headers into an HTTP/1.1 handshake's (RFC 6455 section 4.1): a
/// fresh `Sec-WebSocket-Key`, and version 13 unless the client named one.
pub fn as_http1_handshake(headers: &mut HeaderMap) -> Result<(), crate::error::ProxyError> {
    use base64::Engine as _;
    let mut nonce = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut nonce)
        .map_err(|_| {
            crate::error::ProxyError::Internal("no randomness for a WebSocket key".into())
        })?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|e| crate::error::ProxyError::Internal(e.into()))?,
    );
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
    Ok(())
}

/// Puts back the two hop-by-hop headers a handshake needs, once the others are stripped.
pub fn mark_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Both halves of an accepted upgrade, joined once the `101` has gone out.
pub struct Tunnel {
    /// The client's connection, once hyper hands it over.
    pub client: OnUpgrade,
    /// The site's connection.
    pub upstream: OnUpgrade,
    /// The `101`'s body from the site: holds the route's upstream permit while the tunnel
    /// lives.
    pub upstream_permit: ResponseBody,
    /// `websocket_idle_timeout`.
    pub idle: Duration,
}

impl Tunnel {
    /// Copies both ways until either side closes or fails, or both are silent for `idle`.
    /// `hold` (the worker's request slot) is kept until then.
    pub async fn run<H: Send + 'static>(self, hold: H) {
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let (mut client_reads, mut client_writes) =
            tokio::io::split(Watched::new(TokioIo::new(client), started, &last));
        let (mut upstream_reads, mut upstream_writes) =
            tokio::io::split(Watched::new(TokioIo::new(upstream), started, &last));
        // Each direction ends at its reader's end of stream, and passes the end on; once
        // either has, the other has nothing left to say (a WebSocket closes both ways).
        let up = async {
            let copied = tokio::io::copy(&mut client_reads, &mut upstream_writes).await;
            let _ = upstream_writes.shutdown().await;
            copied
        };
        let down = async {
            let copied = tokio::io::copy(&mut upstream_reads, &mut client_writes).await;
            let _ = client_writes.shutdown().await;
            copied
        };
        let silent = async {
            loop {
                let since = started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if since >= self.idle {
                    return;
                }
                tokio::time::sleep(self.idle - since).await;
            }
        };
        let ended = tokio::select! {
            copied = up => copied,
            copied = down => copied,
            () = silent => {
                tracing::debug!(idle = ?self.idle, "websocket closed: silent");
                Ok(0)
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "websocket ended with an error");
        }
        drop(self.upstream_permit);
        drop(hold);
    }
}

/// An I/O object that records when it last read anything.
struct Watched<T> {
    inner: T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn new(inner: T, started: Instant, last: &Arc<AtomicU64>) -> Self {
        Self {
            inner,
            started,
            last: Arc::clone(last),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(at, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn only_an_http_1_1_get_asking_for_websocket_is_a_handshake() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_handshake(&Method::GET, Version::HTTP_11, &ws));
        assert!(!is_handshake(&Method::POST, Version::HTTP_11, &ws));
        assert!(!is_handshake(&Method::GET, Version::HTTP_10, &ws));
        let h2c = headers(&[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(!is_handshake(&Method::GET, Version::HTTP_11, &h2c));
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(!is_handshake(
            &Method::GET,
            Version::HTTP_11,
            &no_connection
        ));
    }
}

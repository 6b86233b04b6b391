//! One port, two protocols: a connection's first bytes tell HTTP/1.1 from h2c (prior knowledge,
//! RFC 9113 section 3.3), and the bytes read to tell are replayed to the server that serves it.
//! Done here, not by hyper-util's auto builder, so that the HTTP/2 side can be configured in
//! full (its HPACK table size, which the auto builder does not expose).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::service::HttpService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    H2c,
}

/// Reads until the bytes so far are the whole HTTP/2 preface or stop matching it (usually the
/// first read); returns the protocol and `io` with those bytes put back in front.
pub async fn sniff<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(Protocol, Rewind<I>)> {
    let mut read = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = io.read(&mut buf[..PREFACE.len() - read.len()]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&buf[..n]);
        if !PREFACE.starts_with(&read) {
            return Ok((Protocol::Http1, Rewind::new(read, io)));
        }
        if read.len() == PREFACE.len() {
            return Ok((Protocol::H2c, Rewind::new(read, io)));
        }
    }
}

/// An I/O object whose first reads return `prefix`.
#[derive(Debug)]
pub struct Rewind<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Rewind<I> {
    fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A served connection of either version: runs to its end, and can be asked to finish what it
/// has in flight and close.
pub trait ServedConnection: Future<Output = Result<(), hyper::Error>> {
    /// Starts a graceful close; keep polling until it ends.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> ServedConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> ServedConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> ServedConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(sent: &[&[u8]]) -> (Protocol, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        let sent: Vec<Vec<u8>> = sent.iter().map(|s| s.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for piece in sent {
                client.write_all(&piece).await.expect("write");
                tokio::task::yield_now().await;
            }
            client
        });
        let (protocol, mut rewound) = sniff(server).await.expect("sniffed");
        drop(writer.await.expect("writer"));
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.expect("read");
        (protocol, all)
    }

    #[tokio::test]
    async fn the_preface_means_h2c_and_every_byte_is_replayed() {
        let (protocol, bytes) = sniffed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\x00\x00"]).await;
        assert_eq!(protocol, Protocol::H2c);
        assert_eq!(bytes, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
    }

    #[tokio::test]
    async fn anything_else_is_http1_as_soon_as_it_differs() {
        for request in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"POST /",
            b"PRI / HTTP/1.1\r\n",
        ] {
            let (protocol, bytes) = sniffed(&[request]).await;
            assert_eq!(protocol, Protocol::Http1, "{request:?}");
            assert_eq!(bytes, request);
        }
    }

    #[tokio::test]
    async fn a_connection_closed_before_a_byte_is_an_error() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(server).await.is_err());
    }
}

//! The one accept loop of the stand-in servers in tests and benches: bind 127.0.0.1 on a port of
//! the system's choosing, accept for as long as the runtime lives, one task per connection.
//!
//! Also compiled into `benches/support` (by `#[path]`), so it uses nothing else from the tests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A listener on 127.0.0.1, on a port of the system's choosing, and its address.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Accepts connections on `listener` until the runtime ends, each handed to `connection` on a
/// task of its own (with `TCP_NODELAY` set).
pub async fn accept_loop<F, Fut>(listener: TcpListener, connection: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream));
            }
            // Out of descriptors, typically, under a load bench: back off instead of spinning,
            // and keep serving once some close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves HTTP/1.1 and h2c on `listener` from a task of its own, each request answered by
/// `handler`.
pub fn serve<H, Fut, B>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = Arc::new(handler);
    tokio::spawn(accept_loop(listener, move |stream| {
        serve_connection(stream, Arc::clone(&handler))
    }));
}

/// Serves HTTP/1.1 and h2c on one connection (a TCP stream, or TLS over one), each request
/// answered by `handler`, until the connection ends.
pub async fn serve_connection<I, H, Fut, B>(io: I, handler: Arc<H>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |request| {
        let answer = handler(request);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

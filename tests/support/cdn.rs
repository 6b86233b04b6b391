//! The tests' CDN: the demo's [`StandInCdn`] (one verifying logic for both) served on
//! 127.0.0.1:0, recording every request, with what only tests need around it: generated and
//! gated bodies, a stall before headers, `HEAD` refused, TLS, a secret switched mid-test, and
//! headers the gateway must not pass on.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body, Frame};
use signgate::body::{BoxError, ResponseBody};
use signgate::demo::cdn::{Contents, Received, StandInCdn, StoredFile};
use tokio::sync::{Notify, watch};

use super::accept::{accept_loop, bind, serve, serve_connection};
use super::secret;

/// The `Content-Type` of every test file.
const FILE_TYPE: &str = "image/png";

/// A body made when a file is requested, for files too large to hold or that must stream on cue.
pub enum FileBody {
    /// `len` bytes of a fixed pattern, made in [`CHUNK`]-sized chunks as they are sent.
    Generated { len: u64 },
    /// `first`, then, once `gate` opens, `second`; no `Content-Length`.
    Gated {
        first: Bytes,
        second: Bytes,
        gate: Arc<Gate>,
    },
}

/// Holds [`FileBody::Gated`] bodies between their two chunks until it opens, and tells when a
/// reader went away while it was shut.
pub struct Gate {
    open: watch::Sender<bool>,
    closed: Notify,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: watch::Sender::new(false),
            closed: Notify::new(),
        })
    }

    /// Lets every body behind the gate send its second chunk, those already waiting and those
    /// yet to start.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Resolves once a body's reader went away while the gate was shut.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }
}

/// Chunk size of [`FileBody::Generated`] bodies.
pub const CHUNK: u64 = 64 * 1024;

/// Chunk `index` of a [`FileBody::Generated`] body: a fixed pattern stamped with its index, so a
/// lost, repeated or reordered chunk changes the hash.
pub fn generated_chunk(index: u64, len: u64) -> Bytes {
    let start = index * CHUNK;
    let size = CHUNK.min(len - start) as usize;
    let mut chunk: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let stamp = index.to_le_bytes();
    let n = stamp.len().min(size);
    chunk[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(chunk)
}

impl FileBody {
    fn contents(self) -> Contents {
        match self {
            FileBody::Generated { len } => Contents::Streamed {
                len: Some(len),
                body: Arc::new(move || generated(len)),
            },
            FileBody::Gated {
                first,
                second,
                gate,
            } => Contents::Streamed {
                len: None,
                body: Arc::new(move || {
                    gated(first.clone(), second.clone(), Arc::clone(&gate)).boxed_unsync()
                }),
            },
        }
    }
}

/// The stand-in CDN on 127.0.0.1, serving files only to valid, handle-bound credentials.
#[derive(Clone)]
pub struct TestCdn {
    pub addr: SocketAddr,
    pub cdn: Arc<StandInCdn>,
}

pub struct TestCdnBuilder {
    files: Vec<(String, StoredFile)>,
    stall_before_headers: bool,
    refuse_head: bool,
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl TestCdn {
    pub fn builder() -> TestCdnBuilder {
        TestCdnBuilder {
            files: Vec::new(),
            stall_before_headers: false,
            refuse_head: false,
            tls: None,
        }
    }

    /// Verifies with `secret` from now on, as after a change on the CDN's dashboard.
    pub fn set_secret(&self, secret: &str) {
        self.cdn
            .set_secret(signgate::secret::Secret::new(secret.into()).expect("not empty"));
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.cdn.received()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl TestCdnBuilder {
    /// A `image/png` file of these bytes.
    pub fn file(mut self, handle: &str, bytes: impl Into<Bytes>) -> Self {
        self.files
            .push((handle.into(), StoredFile::bytes(bytes, FILE_TYPE)));
        self
    }

    /// A `image/png` file whose body is made on request.
    pub fn body(mut self, handle: &str, body: FileBody) -> Self {
        let file = StoredFile {
            contents: body.contents(),
            content_type: FILE_TYPE.into(),
        };
        self.files.push((handle.into(), file));
        self
    }

    /// Records each request, then never sends response headers.
    pub fn stall_before_headers(mut self) -> Self {
        self.stall_before_headers = true;
        self
    }

    /// Answers every `HEAD` with 405, as a CDN that serves only `GET` does (unrecorded).
    pub fn refuse_head(mut self) -> Self {
        self.refuse_head = true;
        self
    }

    /// Serve https with this PEM certificate chain and PEM private key.
    pub fn tls(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls = Some((cert_pem, key_pem));
        self
    }

    pub async fn start(self) -> TestCdn {
        let (listener, addr) = bind().await;
        let cdn = Arc::new(StandInCdn::new(secret(), format!("http://{addr}")).recording());
        for (handle, file) in self.files {
            cdn.insert(&handle, file);
        }
        let (stall, refuse_head) = (self.stall_before_headers, self.refuse_head);
        let handler = {
            let cdn = Arc::clone(&cdn);
            move |request: hyper::Request<hyper::body::Incoming>| {
                let cdn = Arc::clone(&cdn);
                async move {
                    if refuse_head && request.method() == http::Method::HEAD {
                        let mut response = Response::new(signgate::body::empty());
                        *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
                        response
                            .headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static("GET"));
                        return response;
                    }
                    let mut response = cdn.handle(request).await;
                    if stall {
                        std::future::pending::<()>().await;
                    }
                    if response.status().is_success() {
                        add_headers_not_to_pass_on(&mut response);
                    }
                    response
                }
            }
        };
        match self.tls {
            None => serve(listener, handler),
            Some((cert, key)) => {
                let acceptor = tls_acceptor(&cert, &key);
                let handler = Arc::new(handler);
                tokio::spawn(accept_loop(listener, move |stream| {
                    let acceptor = acceptor.clone();
                    let handler = Arc::clone(&handler);
                    async move {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve_connection(tls, handler).await;
                        }
                    }
                }));
            }
        }
        TestCdn { addr, cdn }
    }
}

/// A cookie for the CDN's domain and a hop-by-hop header, which the gateway must drop.
fn add_headers_not_to_pass_on(response: &mut Response<ResponseBody>) {
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, HeaderValue::from_static("cdn=1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
}

fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("cert and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it: (ca PEM, leaf PEM, leaf key PEM).
pub fn self_signed_ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

fn generated(len: u64) -> ResponseBody {
    let chunks = (0..len.div_ceil(CHUNK))
        .map(move |i| Ok::<_, BoxError>(Frame::data(generated_chunk(i, len))));
    StreamBody::new(IterStream(chunks)).boxed_unsync()
}

/// `first`, then, once `gate` opens, `second`.
pub fn gated(
    first: Bytes,
    second: Bytes,
    gate: Arc<Gate>,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Frame::data(first))).await;
        let mut open = gate.open.subscribe();
        tokio::select! {
            opened = async { open.wait_for(|open| *open).await.is_ok() } => {
                if opened {
                    let _ = tx.send(Ok(Frame::data(second))).await;
                }
            }
            () = tx.closed() => gate.closed.notify_one(),
        }
    });
    StreamBody::new(ReceiverStream(rx))
}

/// An iterator as a `Stream`, without pulling in a stream crate.
struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// The receiving end of a channel as a `Stream`.
pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

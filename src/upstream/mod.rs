//! The upstream client: pooled keep-alive connections ([`pool`]), rustls for https (HTTP/2 by
//! ALPN), timeouts and a connection cap; [`headers`] has what is stripped and added on the way.

pub mod headers;
pub mod pool;
pub mod skew;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::Semaphore;

use crate::body::{Holding, IdleTimeout, ResponseBody};
use crate::config::{Fetch, Timeouts, Upstream};
use crate::error::{ProxyError, StartupError};
use crate::mode::request_body::client_body_fault;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use skew::ClockSkew;

use crate::metrics::route::UpstreamMetrics;

pub use headers::strip_hop_by_hop;
use pool::{Pool, SendError};

/// A pooled client for one route's upstream, with that route's timeouts, trust roots and
/// connection limit.
#[derive(Clone)]
pub struct UpstreamClient {
    upstream: Upstream,
    pool: Pool,
    timeouts: Timeouts,
    /// One per request in flight (over HTTP/1.1, one per connection in use): at most
    /// `max_upstream_connections`.
    permits: Arc<Semaphore>,
    /// Answers with status 403: on a CDN, the alarm that our signatures are refused.
    forbidden: Counter,
    /// The upstream's clock, from the `Date` of its answers.
    skew: Arc<ClockSkew>,
}

impl UpstreamClient {
    /// Builds the client for route `route_name`'s `fetch`: webpki roots plus its `ca_file`,
    /// if any; every answer with status 403 adds one to `metrics`' `forbidden`, and the
    /// upstream's clock is watched, with a warning past `max_clock_skew`.
    pub fn new(
        route_name: &str,
        fetch: &Fetch,
        metrics: &UpstreamMetrics,
        max_clock_skew: Duration,
    ) -> Result<Self, StartupError> {
        let https = connector(route_name, fetch.ca_file.as_deref(), fetch.timeouts.connect)?;
        let max_connections = fetch.max_connections.get();
        let pool = Pool::new(
            https,
            fetch.keepalive,
            fetch.max_response_headers.get(),
            fetch.upstream.host_header().clone(),
        );
        Ok(Self {
            upstream: fetch.upstream.clone(),
            pool,
            timeouts: fetch.timeouts,
            permits: Arc::new(Semaphore::new(max_connections)),
            forbidden: metrics.forbidden.clone(),
            skew: Arc::new(ClockSkew::new(
                route_name,
                max_clock_skew,
                metrics.clock_skew.clone(),
            )),
        })
    }

    /// The upstream this client reaches.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends `request` upstream once a connection permit is free: it waits up to
    /// `response_timeout` for one (503 after that), then the upstream has `response_timeout`
    /// for its response headers (504 after that). The body then fails if it pauses longer than
    /// `body_idle_timeout`, and holds the permit until it is dropped. Hop-by-hop headers are
    /// stripped; the status is kept in the extensions as an
    /// [`UpstreamStatus`](crate::request_log::UpstreamStatus) for the access log. `now` is the
    /// request's time (Unix seconds) from the gateway's clock, which the answer's `Date` is
    /// compared with.
    pub async fn send(
        &self,
        request: Request<ResponseBody>,
        now: u64,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let permit = tokio::time::timeout(
            self.timeouts.response,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| ProxyError::UpstreamBusy)?
        .map_err(|e| ProxyError::Internal(e.into()))?;
        let response = tokio::time::timeout(self.timeouts.response, self.pool.send(request))
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(self.timeouts.response))?
            .map_err(|e| match e {
                SendError::Connect(e) => ProxyError::UpstreamUnreachable(e),
                // The client's body stalled or passed the limit while streaming up.
                SendError::Send(e) => {
                    client_body_fault(&e).unwrap_or_else(|| ProxyError::UpstreamBroken(e.into()))
                }
            })?;
        let (mut parts, body) = response.into_parts();
        parts
            .extensions
            .insert(crate::request_log::UpstreamStatus(parts.status));
        if parts.status == http::StatusCode::FORBIDDEN {
            self.forbidden.inc();
        }
        self.skew.observe(&parts.headers, now);
        // A message with both is framed by its transfer coding (RFC 9112 section 6.3): the
        // length is a lie that would make a cut-short body look complete to the client.
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers);
        let body = Holding::new(body, permit);
        let idle = if is_event_stream(&parts.headers) {
            self.timeouts.event_stream_idle
        } else {
            Some(self.timeouts.body_idle)
        };
        let body = match idle {
            Some(idle) => IdleTimeout::new(body, idle).boxed_unsync(),
            None => body.boxed_unsync(),
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// Whether an answer is a server-sent event stream, whose pauses are the events' own.
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// An http and https connector for route `route_name`: webpki roots plus the PEM certificates
/// in `ca_file`, if any, `TCP_NODELAY`, and `connect_timeout` for TCP and TLS.
pub fn connector(
    route_name: &str,
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, StartupError> {
    let ca_error = |reason: String| StartupError::CaFile {
        route: route_name.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(format!("cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| ca_error(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_error(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::Tls {
            route: route_name.to_owned(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

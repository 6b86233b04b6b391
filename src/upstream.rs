//! The upstream client: pooled keep-alive connections, rustls for https (HTTP/2 by ALPN),
//! timeouts, and hop-by-hop header stripping.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::Semaphore;

use crate::body::{BoxError, Holding, IdleTimeout, ResponseBody};
use crate::config::{Route, Timeouts};
use crate::error::{ProxyError, StartupError};
use http_body_util::BodyExt;

/// Headers that describe one connection, not the message: never forwarded either way (RFC 9110
/// section 7.6.1), along with any header the `Connection` header names.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those listed in `Connection`, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// A pooled client for one route's upstream, with that route's timeouts, trust roots and
/// connection limit.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, ResponseBody>,
    timeouts: Timeouts,
    /// One per request in flight (over HTTP/1.1, one per connection in use): at most
    /// `max_upstream_connections`.
    permits: Arc<Semaphore>,
}

impl UpstreamClient {
    /// Builds the client for `route`: webpki roots plus the route's `ca_file`, if any.
    pub fn new(route: &Route) -> Result<Self, StartupError> {
        let tls_error = |reason: String| StartupError::Tls {
            route: route.name.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &route.ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(tls_error(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(route.timeouts.connect));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let max_connections = route.max_upstream_connections.get();
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(max_connections)
            .build(https);
        Ok(Self {
            client,
            timeouts: route.timeouts,
            permits: Arc::new(Semaphore::new(max_connections)),
        })
    }

    /// Sends `request` upstream once a connection permit is free: it waits up to
    /// `response_timeout` for one (503 after that), then the upstream has `response_timeout`
    /// for its response headers (504 after that). The body then fails if it pauses longer than
    /// `body_idle_timeout`, and holds the permit until it is dropped. Hop-by-hop headers are
    /// stripped.
    pub async fn send(
        &self,
        request: Request<ResponseBody>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let permit = tokio::time::timeout(
            self.timeouts.response,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| ProxyError::UpstreamBusy)?
        .map_err(|e| ProxyError::Internal(e.into()))?;
        let response = tokio::time::timeout(self.timeouts.response, self.client.request(request))
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(self.timeouts.response))?
            .map_err(|e| {
                if caused_by_body_limit(&e) {
                    ProxyError::BodyTooLarge
                } else if e.is_connect() {
                    ProxyError::UpstreamUnreachable(e.into())
                } else {
                    ProxyError::UpstreamBroken(e.into())
                }
            })?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Holding::new(body.map_err(BoxError::from), permit);
        let body = IdleTimeout::new(body, self.timeouts.body_idle);
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

/// Whether the request failed because the client's body passed the route's limit.
fn caused_by_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-private"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-private", "1"),
            ("content-type", "image/png"),
            ("etag", "\"abc\""),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "etag"]);
    }
}

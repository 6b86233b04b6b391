//! Errors: [`ProxyError`] on the request path, mapped to a status in one place, and
//! [`StartupError`] before serving.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::authorize::Denial;
use crate::body::{BoxError, ResponseBody, full};
use crate::config::ConfigError;
use crate::mode::verify::{Refused, VerifyMark};

/// Who a failure is down to; sets the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request was wrong.
    Client,
    /// The upstream failed or was too slow.
    Upstream,
    /// signgate itself.
    Internal,
}

/// What kind of upstream failure a request met, for `signgate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The connection was refused (nothing listening, or a firewall's reset).
    Refused,
    /// Connecting, or waiting for the response headers, took too long.
    Timeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Every connection the route allows stayed busy.
    Busy,
    /// Anything else: a broken connection, an unusable answer, a name that did not resolve.
    Other,
}

impl UpstreamErrorKind {
    /// Every kind, in label order (the index is the discriminant).
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Refused,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Busy,
        UpstreamErrorKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Refused => "refused",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Busy => "busy",
            UpstreamErrorKind::Other => "other",
        }
    }

    /// The kind of a connection or exchange that failed with `error`: what its chain of
    /// causes holds (looking inside `io::Error`s, whose `source` skips the error they wrap).
    fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut current = Some(error);
        while let Some(e) = current {
            if e.downcast_ref::<rustls::Error>().is_some() {
                return UpstreamErrorKind::Tls;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return UpstreamErrorKind::Refused,
                    std::io::ErrorKind::TimedOut => return UpstreamErrorKind::Timeout,
                    _ => {}
                }
                if let Some(inner) = io.get_ref() {
                    current = Some(inner);
                    continue;
                }
            }
            current = e.source();
        }
        UpstreamErrorKind::Other
    }
}

/// The first error of type `T` in `error`'s chain of sources, `error` itself included.
pub fn find_cause<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route's prefix matches the path.
    #[error("no route")]
    NoRoute,
    /// The route's mode does not serve this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods it does serve, for the `Allow` header.
        allow: &'static str,
    },
    /// No host where one is required, `Host` repeated, an HTTP/2 `host` that differs from
    /// `:authority`, or a host that is not URI host syntax (see [`crate::host`]).
    #[error("missing, repeated, conflicting or invalid host")]
    BadHost,
    /// The request target cannot be forwarded as a path and query.
    #[error("request target cannot be forwarded")]
    BadTarget,
    /// A method longer than any real one ([`MAX_METHOD_LEN`](crate::host::MAX_METHOD_LEN)).
    #[error("method too long")]
    BadMethod,
    /// The path after the prefix is not `[TASKS/]HANDLE`.
    #[error("not a file handle")]
    NotAHandle,
    /// The request needs a call (such as `convert` for tasks) the route does not allow.
    #[error("call not allowed on this route")]
    CallNotAllowed,
    /// The request carries a transformation task the route's `tasks` do not list.
    #[error("task not allowed on this route")]
    TaskNotAllowed,
    /// The path names an external URL source that is not plainly written (user info, encoded
    /// slashes or dots, dot segments, a query).
    #[error("not a plain external source")]
    BadSource,
    /// The path names an external URL source outside the route's `external_sources`.
    #[error("external source not allowed on this route")]
    SourceNotAllowed,
    /// The route's `authorize_url` answered 401 or 403: that answer goes back to the client.
    #[error("refused by the authorization service ({})", .0.status())]
    Denied(Arc<Denial>),
    /// The `authorize_url` service could not be reached or its connection broke.
    #[error("authorization service unreachable")]
    AuthorizeUnreachable(#[source] BoxError),
    /// The `authorize_url` service answered neither 2xx nor 401 nor 403.
    #[error("authorization service answered {0}")]
    AuthorizeFailed(StatusCode),
    /// The `authorize_url` service did not answer within `authorize_timeout`.
    #[error("authorization service timed out after {0:?}")]
    AuthorizeTimeout(Duration),
    /// More request headers than one request may carry (an HTTP/2 request past the count
    /// hyper's HTTP/1.1 parser stops at).
    #[error("too many request headers")]
    TooManyHeaders,
    /// The client paused longer than `client_body_timeout` while sending its request body.
    #[error("request body timed out after {0:?}")]
    ClientBodyTimeout(Duration),
    /// The client's request body broke off (reset, closed or malformed) before it ended.
    #[error("request body broken")]
    ClientBodyBroken(#[source] BoxError),
    /// No request slot came free within `header_read_timeout`: the worker already has
    /// `max_connections` requests in flight (HTTP/2 streams count one each).
    #[error("too many requests in flight")]
    TooManyRequests,
    /// The request body is larger than the route accepts.
    #[error("request body too large")]
    BodyTooLarge,
    /// The upstream could not be reached or its connection broke before a response.
    #[error("upstream unreachable")]
    UpstreamUnreachable(#[source] BoxError),
    /// The upstream sent no response headers within the route's `response_timeout`.
    #[error("upstream timed out after {0:?}")]
    UpstreamTimeout(Duration),
    /// Every upstream connection the route allows stayed busy for its `response_timeout`.
    #[error("upstream connection limit reached")]
    UpstreamBusy,
    /// The upstream answered something unusable.
    #[error("bad upstream response")]
    UpstreamBroken(#[source] BoxError),
    /// A verify route refused the request's credentials (or its path, or a task).
    #[error("credentials refused: {}", .0.check.as_str())]
    Unverified(Box<Refused>),
    /// signgate could not build something it should always be able to.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ProxyError {
    /// The status for each error. Exhaustive, no wildcard: a new variant must choose one.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NotAHandle
            | ProxyError::BadSource
            | ProxyError::BadHost
            | ProxyError::BadTarget
            | ProxyError::BadMethod => StatusCode::BAD_REQUEST,
            ProxyError::CallNotAllowed
            | ProxyError::TaskNotAllowed
            | ProxyError::SourceNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::Denied(denial) => denial.status(),
            // 400 for a path that names no file, the route's `expired_status` for an expired
            // policy, 403 for every other refusal.
            ProxyError::Unverified(refused) => refused.status(),
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBodyBroken(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooManyRequests => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamBroken(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::AuthorizeUnreachable(_) | ProxyError::AuthorizeFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout(_) | ProxyError::AuthorizeTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoRoute
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::NotAHandle
            | ProxyError::BadHost
            | ProxyError::BadTarget
            | ProxyError::BadMethod
            | ProxyError::CallNotAllowed
            | ProxyError::TaskNotAllowed
            | ProxyError::BadSource
            | ProxyError::SourceNotAllowed
            | ProxyError::Denied(_)
            | ProxyError::Unverified(_)
            | ProxyError::TooManyHeaders
            | ProxyError::ClientBodyTimeout(_)
            | ProxyError::ClientBodyBroken(_)
            | ProxyError::TooManyRequests
            | ProxyError::BodyTooLarge => Blame::Client,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamBusy
            | ProxyError::UpstreamBroken(_)
            | ProxyError::AuthorizeUnreachable(_)
            | ProxyError::AuthorizeFailed(_)
            | ProxyError::AuthorizeTimeout(_) => Blame::Upstream,
            ProxyError::Internal(_) => Blame::Internal,
        }
    }

    /// The upstream failure this error is, if it is one: the route's upstream, not the
    /// `authorize_url` service (whose failures are the authorization's, logged as such).
    pub fn upstream_error_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::UpstreamUnreachable(source) | ProxyError::UpstreamBroken(source) => {
                Some(UpstreamErrorKind::of(source.as_ref()))
            }
            ProxyError::UpstreamTimeout(_) => Some(UpstreamErrorKind::Timeout),
            ProxyError::UpstreamBusy => Some(UpstreamErrorKind::Busy),
            ProxyError::NoRoute
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::BadHost
            | ProxyError::BadTarget
            | ProxyError::BadMethod
            | ProxyError::NotAHandle
            | ProxyError::CallNotAllowed
            | ProxyError::TaskNotAllowed
            | ProxyError::BadSource
            | ProxyError::SourceNotAllowed
            | ProxyError::Denied(_)
            | ProxyError::Unverified(_)
            | ProxyError::AuthorizeUnreachable(_)
            | ProxyError::AuthorizeFailed(_)
            | ProxyError::AuthorizeTimeout(_)
            | ProxyError::TooManyHeaders
            | ProxyError::ClientBodyTimeout(_)
            | ProxyError::ClientBodyBroken(_)
            | ProxyError::TooManyRequests
            | ProxyError::BodyTooLarge
            | ProxyError::Internal(_) => None,
        }
    }

    /// The fixed, short body the client sees: never a source error, never a credential.
    pub fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "not found\n",
            ProxyError::MethodNotAllowed { .. } => "method not allowed\n",
            ProxyError::NotAHandle => "bad request: not a file handle\n",
            ProxyError::BadHost => "bad request: missing, repeated or invalid Host\n",
            ProxyError::BadTarget => "bad request: bad request target\n",
            ProxyError::BadMethod => "bad request: method too long\n",
            ProxyError::CallNotAllowed => "forbidden: this route does not allow that call\n",
            ProxyError::TaskNotAllowed => "forbidden: this route does not allow that task\n",
            ProxyError::BadSource => {
                "bad request: an external source must be a plain http(s) URL with no query\n"
            }
            ProxyError::SourceNotAllowed => {
                "forbidden: this route does not sign that external source\n"
            }
            ProxyError::Denied(_) => "forbidden\n",
            // The response names the file and the reason: see `into_response`.
            ProxyError::Unverified(_) => "forbidden: credentials refused\n",
            ProxyError::AuthorizeUnreachable(_) | ProxyError::AuthorizeFailed(_) => {
                "bad gateway: authorization failed\n"
            }
            ProxyError::AuthorizeTimeout(_) => "gateway timeout: authorization\n",
            ProxyError::BodyTooLarge => "request body too large\n",
            ProxyError::TooManyHeaders => "request header fields too large: too many headers\n",
            ProxyError::ClientBodyTimeout(_) => "request timeout: the request body stalled\n",
            ProxyError::ClientBodyBroken(_) => "bad request: the request body broke off\n",
            ProxyError::TooManyRequests => "service unavailable: too many requests\n",
            ProxyError::UpstreamUnreachable(_) => "bad gateway: upstream unreachable\n",
            ProxyError::UpstreamBroken(_) => "bad gateway: bad upstream response\n",
            ProxyError::UpstreamTimeout(_) => "gateway timeout\n",
            ProxyError::UpstreamBusy => "service unavailable: upstream busy\n",
            ProxyError::Internal(_) => "internal error\n",
        }
    }

    /// The response for this error: its status and a short `text/plain` body (for a denial,
    /// what the authorization service answered, as [`Denial::response`] trims it; for a
    /// verify route's refusal, the file and the reason as the CDN words them, with the failed
    /// check in a [`VerifyMark`] for the access log).
    pub fn into_response(self) -> Response<ResponseBody> {
        if let ProxyError::Denied(denial) = &self {
            return denial.response();
        }
        let body = match &self {
            ProxyError::Unverified(refused) => Bytes::from(refused.body()),
            _ => Bytes::from_static(self.public_message().as_bytes()),
        };
        let mut response = Response::new(full(body));
        if let ProxyError::Unverified(refused) = &self {
            response
                .extensions_mut()
                .insert(VerifyMark(Some(refused.check)));
        }
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ProxyError::MethodNotAllowed { allow } = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `server.pid_file` could not be written.
    #[error("`server.pid_file`: cannot write {}: {source}", path.display())]
    PidFile {
        /// The pid file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A runtime, worker thread or signal handler could not be set up.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OS gave no random bytes for the demo's secret.
    #[cfg(feature = "demo")]
    #[error("no random bytes available for the demo's secret")]
    NoRandomness,
    /// A route's `ca_file` is unusable.
    #[error("route `{route}`: `ca_file`: {reason}")]
    CaFile {
        /// The route.
        route: String,
        /// Why.
        reason: String,
    },
    /// The listener's `tls_cert` or `tls_key` file is unreadable or invalid.
    #[error("`server.{key}`: {}: {reason}", path.display())]
    TlsFile {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS client for a route's upstream could not be set up (not down to its settings).
    #[error("route `{route}`: cannot set up TLS for the upstream: {reason}")]
    Tls {
        /// The route.
        route: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::verify::Check;

    #[test]
    fn every_error_has_its_status_and_blame() {
        let io = || -> BoxError { "x".into() };
        let table: Vec<(ProxyError, u16, Blame)> = vec![
            (ProxyError::NoRoute, 404, Blame::Client),
            (
                ProxyError::MethodNotAllowed { allow: "GET" },
                405,
                Blame::Client,
            ),
            (ProxyError::NotAHandle, 400, Blame::Client),
            (ProxyError::BadHost, 400, Blame::Client),
            (ProxyError::BadTarget, 400, Blame::Client),
            (ProxyError::BadMethod, 400, Blame::Client),
            (ProxyError::CallNotAllowed, 403, Blame::Client),
            (ProxyError::TaskNotAllowed, 403, Blame::Client),
            (ProxyError::AuthorizeUnreachable(io()), 502, Blame::Upstream),
            (
                ProxyError::AuthorizeFailed(StatusCode::FOUND),
                502,
                Blame::Upstream,
            ),
            (
                ProxyError::AuthorizeTimeout(Duration::from_secs(2)),
                504,
                Blame::Upstream,
            ),
            (ProxyError::BodyTooLarge, 413, Blame::Client),
            (ProxyError::TooManyHeaders, 431, Blame::Client),
            (
                ProxyError::ClientBodyTimeout(Duration::from_secs(1)),
                408,
                Blame::Client,
            ),
            (ProxyError::ClientBodyBroken(io()), 400, Blame::Client),
            (ProxyError::TooManyRequests, 503, Blame::Client),
            (ProxyError::UpstreamUnreachable(io()), 502, Blame::Upstream),
            (ProxyError::UpstreamBroken(io()), 502, Blame::Upstream),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                Blame::Upstream,
            ),
            (ProxyError::UpstreamBusy, 503, Blame::Upstream),
            (ProxyError::Internal(io()), 500, Blame::Internal),
        ];
        let refused = |check, expired_status| {
            ProxyError::Unverified(Box::new(Refused {
                check,
                handle: None,
                detail: "x",
                expired_status,
            }))
        };
        let table = table.into_iter().chain([
            (refused(Check::Target, StatusCode::GONE), 400, Blame::Client),
            (
                refused(Check::Signature, StatusCode::GONE),
                403,
                Blame::Client,
            ),
            (refused(Check::Task, StatusCode::GONE), 403, Blame::Client),
            (
                refused(Check::Expired, StatusCode::GONE),
                410,
                Blame::Client,
            ),
            (
                refused(Check::Expired, StatusCode::FORBIDDEN),
                403,
                Blame::Client,
            ),
        ]);
        for (error, status, blame) in table {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.blame(), blame, "{error}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
        }
    }

    #[test]
    fn upstream_failures_are_told_apart_by_kind() {
        use std::io::{Error, ErrorKind};
        let wrapped = |e: Error| -> BoxError { Box::new(Error::other(e)) };
        let table: Vec<(ProxyError, Option<UpstreamErrorKind>)> = vec![
            (
                ProxyError::UpstreamUnreachable(wrapped(ErrorKind::ConnectionRefused.into())),
                Some(UpstreamErrorKind::Refused),
            ),
            (
                ProxyError::UpstreamUnreachable(wrapped(ErrorKind::TimedOut.into())),
                Some(UpstreamErrorKind::Timeout),
            ),
            (
                ProxyError::UpstreamUnreachable(wrapped(Error::new(
                    ErrorKind::InvalidData,
                    rustls::Error::DecryptError,
                ))),
                Some(UpstreamErrorKind::Tls),
            ),
            (
                ProxyError::UpstreamBroken("reset".into()),
                Some(UpstreamErrorKind::Other),
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                Some(UpstreamErrorKind::Timeout),
            ),
            (ProxyError::UpstreamBusy, Some(UpstreamErrorKind::Busy)),
            (ProxyError::AuthorizeTimeout(Duration::from_secs(1)), None),
            (ProxyError::NoRoute, None),
        ];
        for (error, kind) in table {
            assert_eq!(error.upstream_error_kind(), kind, "{error}");
        }
        for (index, kind) in UpstreamErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
        }
    }
}

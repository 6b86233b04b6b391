//! Asking a route's `authorize_url` before signing, as nginx's `auth_request` does: a `GET` naming
//! the file and tasks, with the client's `Cookie` and `Authorization`. A 2xx signs; 401 and 403
//! go back to the client; anything else fails closed (502, or 504 past `authorize_timeout`).
//! Allow and deny decisions may be cached per question ([`Question::digest`]), never errors.
//!
//! - [`question`]: what the service is told, and the cache key;
//! - [`denial`]: the refusal passed back to the client.

pub mod denial;
pub mod question;

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use denial::Denial;
pub use question::{Question, Subject, SubjectFile};

use crate::body::{ResponseBody, empty};
use crate::cache::BucketCache;
use crate::config::{Authorize, Route};
use crate::error::{ProxyError, StartupError};
use crate::upstream::connector;

/// The service's answer to one question.
enum Decision {
    /// 2xx: sign.
    Allow,
    /// 401 or 403: pass it back.
    Deny(Arc<Denial>),
}

/// One route's authorization: its settings, a pooled client to the service, and the cached
/// decisions when `authorize_cache` is on.
pub struct Authorizer {
    route: String,
    settings: Authorize,
    /// `authorize_url` as text, and what joins the question's query to it.
    base: String,
    joiner: char,
    client: Client<HttpsConnector<HttpConnector>, ResponseBody>,
    /// Decisions per question digest, each tagged with its cache window.
    decisions: Option<BucketCache<[u8; 32], Decision>>,
}

impl Authorizer {
    /// The authorizer for `route`, if it sets `authorize_url`. Up to `cache_size` decisions are
    /// kept when `authorize_cache` is on.
    pub fn for_route(route: &Route) -> Result<Option<Self>, StartupError> {
        let Some(settings) = route.authorize.clone() else {
            return Ok(None);
        };
        let https = connector(&route.name, None, settings.timeout)?;
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(https);
        let base = settings.url.to_string();
        let joiner = if settings.url.query().is_some() {
            '&'
        } else {
            '?'
        };
        let decisions =
            (!settings.cache.is_zero()).then(|| BucketCache::new(route.signing.cache_size));
        Ok(Some(Self {
            route: route.name.clone(),
            settings,
            base,
            joiner,
            client,
            decisions,
        }))
    }

    /// Asks (or recalls) whether the client of `parts` may have `subject` signed at `now`:
    /// `Ok` to sign, else the error to answer with.
    pub async fn check(
        &self,
        parts: &Parts,
        subject: Subject<'_>,
        now: u64,
    ) -> Result<(), ProxyError> {
        let question = Question::new(&self.route, subject, parts)?;
        let Some(decisions) = &self.decisions else {
            return self.ask(&question).await?.outcome();
        };
        let key = question.digest();
        let window = self.window(&key, now);
        if let Some(decision) = decisions.get(&key, window) {
            return decision.outcome();
        }
        let decision = self.ask(&question).await?;
        decisions.insert(&key, window, decision).outcome()
    }

    /// The cache window `now` falls in for `key`. A decision is reused within its window only,
    /// so for at most `authorize_cache`; each key's windows are offset by its digest, so the
    /// decisions of many users do not all lapse, and get asked again, in the same second.
    fn window(&self, key: &[u8; 32], now: u64) -> u64 {
        let length = self.settings.cache.as_secs().max(1);
        let mut offset = [0; 8];
        offset.copy_from_slice(&key[..8]);
        now.saturating_add(u64::from_le_bytes(offset) % length) / length
    }

    /// Puts `question` to the service within `authorize_timeout`.
    async fn ask(&self, question: &Question) -> Result<Decision, ProxyError> {
        let uri: Uri = format!("{}{}{}", self.base, self.joiner, question.query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ProxyError::Internal(e.into()))?;
        let mut request = Request::new(empty());
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in &question.headers {
            headers.append(name, value.clone());
        }
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ProxyError::AuthorizeUnreachable(e.into()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(Decision::Allow);
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let (parts, body) = response.into_parts();
                let denial = Denial::read(status, &parts.headers, body).await;
                return Ok(Decision::Deny(Arc::new(denial)));
            }
            Err(ProxyError::AuthorizeFailed(status))
        })
        .await
        .map_err(|_| ProxyError::AuthorizeTimeout(timeout))?
    }
}

impl Decision {
    fn outcome(&self) -> Result<(), ProxyError> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Deny(denial) => Err(ProxyError::Denied(Arc::clone(denial))),
        }
    }
}

/// Marks an answer signed for one authorized client as for that client only: `public` and
/// `s-maxage` are dropped from its `Cache-Control` and `private` put first, so a shared cache in
/// front of signgate never hands the file to a client the service was not asked about.
pub fn keep_private(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|directive| {
            let name = directive.split('=').next().unwrap_or("").trim();
            !directive.is_empty()
                && !["public", "private", "s-maxage"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .collect();
    let mut value = String::from("private");
    for directive in kept {
        value.push_str(", ");
        value.push_str(&directive);
    }
    let value = HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("private"));
    headers.insert(header::CACHE_CONTROL, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorized_answer_is_never_left_public() {
        let cases = [
            (
                Some("public, max-age=31536000"),
                "private, max-age=31536000",
            ),
            (Some("max-age=60, s-maxage=600"), "private, max-age=60"),
            (Some("no-store"), "private, no-store"),
            (None, "private"),
        ];
        for (upstream, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = upstream {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
            }
            keep_private(&mut headers);
            assert_eq!(headers[header::CACHE_CONTROL], expected, "{upstream:?}");
        }
    }
}

//! One handler per route mode, and what they share: signing a file reference.

pub mod cors;
pub mod file_answer;
pub mod proxy;
pub mod public_origin;
pub mod redirect;
pub mod request_body;
pub mod site;
pub mod upload_policy;
pub mod verify;
pub mod websocket;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Method, Response};
use hyper::body::Incoming;

use crate::authorize::{Authorizer, Subject, SubjectFile};
use crate::body::ResponseBody;
use crate::cache::CacheOutcome;
use crate::config::Upstream;
use crate::error::ProxyError;
use crate::external::ExternalRef;
use crate::filelink::{FileRef, signed_url, strip_api_key, strip_client_credentials};
use crate::router::{ActiveKind, ActiveRoute};
use crate::scheme::{SchemeError, SignsUrls, is_plain_object_path, object_url};
use crate::server::ListenerScheme;
use crate::signer::{Refusal, RouteSigner};

/// What every handler knows about the request besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// The client's address.
    pub peer: SocketAddr,
    /// The current unix time, read once per request.
    pub now: u64,
    /// The scheme the client reached signgate's listener with.
    pub scheme: ListenerScheme,
    /// `[server] client_body_timeout`: the longest pause in a request body.
    pub client_body_timeout: std::time::Duration,
    /// Whether the client is a trusted proxy (`[server] trusted_proxies`), whose forwarding
    /// headers are kept and extended rather than replaced.
    pub trusted_peer: bool,
}

/// A handler's answer, and whether signing hit the cache (for the access log).
pub struct Handled {
    /// The response.
    pub response: Response<ResponseBody>,
    /// Cache outcome, when the handler signed.
    pub cache: Option<CacheOutcome>,
    /// A WebSocket to join once `response` (a `101`) has gone out.
    pub tunnel: Option<websocket::Tunnel>,
}

/// Dispatches to the route's mode. `rest` is the path after the route's prefix.
pub async fn handle(
    active: &Arc<ActiveRoute>,
    rest: &str,
    request: http::Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let signing = Signing {
        signer: &active.signer,
        authorizer: active.authorizer.as_ref(),
    };
    match &active.kind {
        ActiveKind::Proxy(proxy) => proxy::handle(signing, proxy, rest, request, ctx).await,
        ActiveKind::Redirect(route) => {
            redirect::handle(signing, route, rest, request.into_parts().0, ctx).await
        }
        ActiveKind::Site(site) => site::handle(site, request, ctx).await,
        ActiveKind::UploadPolicy(upload) => {
            upload_policy::handle(signing, upload, rest, request.into_parts().0, ctx).await
        }
        ActiveKind::Verify(verify) => {
            let signer = &active.signer;
            verify::handle(signer.signing(), signer.tasks(), verify, rest, request, ctx).await
        }
    }
}

/// Who signs for a route and who is asked first.
#[derive(Clone, Copy)]
pub struct Signing<'a> {
    /// The route's signer.
    pub signer: &'a RouteSigner,
    /// The route's `authorize_url`, if it sets one.
    pub authorizer: Option<&'a Authorizer>,
}

impl Signing<'_> {
    /// Asks the route's `authorize_url`, if any, whether the client of `parts` may have
    /// `subject` signed.
    pub async fn authorize(
        &self,
        parts: &Parts,
        subject: Subject<'_>,
        now: u64,
    ) -> Result<(), ProxyError> {
        match self.authorizer {
            Some(authorizer) => authorizer.check(parts, subject, now).await,
            None => Ok(()),
        }
    }
}

/// A file reference signed for its route: the upstream URL and the credentials in it.
pub struct SignedTarget {
    /// The upstream URL with credentials.
    pub url: String,
    /// When the credentials expire.
    pub expiry: u64,
    /// Whether they came from the cache.
    pub cache: CacheOutcome,
}

/// Only `GET` and `HEAD` read files.
pub fn require_get_or_head(parts: &Parts) -> Result<(), ProxyError> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed { allow: "GET, HEAD" })
    }
}

/// Parses `rest` as `[APIKEY/][TASKS/]HANDLE` or `[APIKEY/][TASKS/]SOURCE` (an external URL
/// source), checks the route allows what it asks (its calls, tasks and external sources) and
/// that the route's `authorize_url`, if any, allows this client, and signs its URL on
/// `upstream` with only the calls it needs, keeping the client's query minus any credentials
/// it carried. With `relative`, the URL is the path and query only (for a request built from
/// parts). A route with another scheme signs `rest` as an object's path instead
/// ([`sign_object`]).
pub async fn sign_file_ref(
    signing: Signing<'_>,
    upstream: &Upstream,
    relative: bool,
    rest: &str,
    parts: &Parts,
    now: u64,
) -> Result<SignedTarget, ProxyError> {
    let signer = signing.signer;
    if let Some(scheme) = signer.scheme() {
        return sign_object(signing, scheme, upstream, relative, rest, parts, now).await;
    }
    let base = if relative {
        upstream.base_path()
    } else {
        upstream.base()
    };
    let api_key = signer.app().map(|app| app.key.as_str());
    let written = rest;
    let rest = strip_api_key(written, api_key);
    let query = parts.uri.query().map(strip_client_credentials);
    if let Some(mut external) = ExternalRef::parse(rest).map_err(|_| ProxyError::BadSource)? {
        // Upstream, the source goes unquoted, as filestack-python writes it.
        external.quoted = false;
        signer.check_external(&external).map_err(refused)?;
        let subject = Subject {
            file: Some(SubjectFile::Source(external.source.as_str())),
            tasks: &external.tasks,
        };
        signing.authorize(parts, subject, now).await?;
        let (Some(api_key), Some((credentials, cache))) =
            (api_key, signer.external_credentials(now, &external.source))
        else {
            return Err(ProxyError::SourceNotAllowed);
        };
        // No query: whether the CDN would read one as the source's or as its own is not
        // written down, and either way the client would choose what reaches the partner.
        let url = external.signed_url(base, api_key, None, &credentials);
        return Ok(SignedTarget {
            url,
            expiry: credentials.expiry,
            cache,
        });
    }
    // A handle read after the API key keeps it in the signed URL, as the client wrote it.
    let base = match api_key {
        Some(key) if rest.len() < written.len() => Cow::Owned(format!("{base}/{key}")),
        _ => Cow::Borrowed(base),
    };
    let file = FileRef::parse(rest).map_err(|_| ProxyError::NotAHandle)?;
    let calls = signer.check_file(&file).map_err(refused)?;
    let subject = Subject {
        file: Some(SubjectFile::Handle(file.handle)),
        tasks: &file.tasks,
    };
    signing.authorize(parts, subject, now).await?;
    let (credentials, cache) = signer.file_credentials(now, file.handle, calls);
    let url = signed_url(
        &base,
        &file,
        query.as_deref(),
        &credentials,
        signer.signing().url_style,
    );
    Ok(SignedTarget {
        url,
        expiry: credentials.expiry,
        cache,
    })
}

/// Signs `rest`, an object's path on `upstream`, with the route's scheme: a plain path (see
/// [`is_plain_object_path`]), the client's query kept without the scheme's credential
/// parameters, the route's `authorize_url` asked first (told `object=URL`).
async fn sign_object(
    signing: Signing<'_>,
    scheme: &dyn SignsUrls,
    upstream: &Upstream,
    relative: bool,
    rest: &str,
    parts: &Parts,
    now: u64,
) -> Result<SignedTarget, ProxyError> {
    if !is_plain_object_path(rest) {
        return Err(ProxyError::BadTarget);
    }
    let url = object_url(upstream.base(), rest, parts.uri.query(), scheme);
    let subject = Subject {
        file: Some(SubjectFile::Object(&url)),
        tasks: &[],
    };
    signing.authorize(parts, subject, now).await?;
    let Some(signed) = signing.signer.scheme_url(now, &url) else {
        return Err(ProxyError::BadTarget);
    };
    let signed = signed.map_err(|e| match e {
        // A path the scheme reads as more than one object is the client's to fix.
        SchemeError::Path(_) => ProxyError::BadTarget,
        SchemeError::Url(_) | SchemeError::TooLong => ProxyError::Internal(e.into()),
    })?;
    let (cache, expiry, signed) = (signed.cache, signed.expiry, signed.url);
    let url = if relative {
        // The path and query, for a request built from parts.
        let after_scheme = signed
            .split_once("://")
            .map_or(signed.as_str(), |(_, rest)| rest);
        after_scheme
            .find('/')
            .map_or_else(|| "/".to_owned(), |slash| after_scheme[slash..].to_owned())
    } else {
        signed.as_str().to_owned()
    };
    Ok(SignedTarget { url, expiry, cache })
}

/// The error for a route's refusal to sign.
fn refused(refusal: Refusal) -> ProxyError {
    match refusal {
        Refusal::Call(_) => ProxyError::CallNotAllowed,
        Refusal::Task => ProxyError::TaskNotAllowed,
        Refusal::Source => ProxyError::SourceNotAllowed,
    }
}

//! redirect mode: answer `307` to the signed CDN URL.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Handled, RequestContext, Signing, require_get_or_head, sign_file_ref};
use crate::body::empty;
use crate::config::{RedirectRoute, TokenCookie};
use crate::error::ProxyError;

/// Answers `GET`/`HEAD PREFIX[TASKS/]HANDLE` with `307` to the signed URL, cacheable privately for
/// no longer than the credentials stay valid less the route's `min_validity`. With a token
/// cookie, the URL carries no token and the answer sets the cookie that does.
pub async fn handle(
    signing: Signing<'_>,
    route: &RedirectRoute,
    rest: &str,
    parts: Parts,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    require_get_or_head(&parts)?;
    let target = sign_file_ref(signing, &route.upstream, false, rest, &parts, ctx.now).await?;
    let (url, set_cookie) = match &route.token_cookie {
        None => (target.url, None),
        Some(cookie) => {
            let max_age = target.expiry.saturating_sub(ctx.now);
            let (url, set_cookie) = token_in_cookie(cookie, &target.url, max_age)?;
            (url, Some(set_cookie))
        }
    };
    let location = HeaderValue::try_from(url).map_err(|e| ProxyError::Internal(e.into()))?;
    // A browser that keeps the redirect still finds `min_validity` left on the URL it follows.
    let remaining = signing
        .signer
        .usable_until(target.expiry)
        .saturating_sub(ctx.now)
        .saturating_sub(signing.signer.signing().min_validity.as_secs());
    // The same with a token cookie. `private` already keeps the answer, and so its cookie, out
    // of shared caches, so `no-store` would only cost the browser a request per visit; and the
    // answer does not depend on the request's cookies, so `Vary: Cookie` would say nothing. A
    // browser that follows the redirect again from its own cache still holds the cookie it got
    // the first time: that lives until the token's expiry, past this `max-age`.
    let cache_control = HeaderValue::try_from(format!("private, max-age={remaining}"))
        .map_err(|e| ProxyError::Internal(e.into()))?;
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, cache_control);
    if let Some(set_cookie) = set_cookie {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie);
    }
    Ok(Handled {
        response,
        cache: Some(target.cache),
        tunnel: None,
    })
}

/// `url`, signed with the token appended as its last query parameter `cookie.name`, without
/// the token, and the `Set-Cookie` that carries that same token for `max_age` seconds. The
/// cookie's `Path` is the object's own path: a wider one would let each redirect's cookie
/// shadow another object's, and a token's ACL names one object only.
fn token_in_cookie(
    cookie: &TokenCookie,
    url: &str,
    max_age: u64,
) -> Result<(String, HeaderValue), ProxyError> {
    let (address, query) = url
        .split_once('?')
        .ok_or_else(|| ProxyError::Internal("the signed URL carries no query".into()))?;
    // The client's own parameters of this name were stripped before signing, and the token is
    // the last parameter: everything after its name is the token, `&` and `=` in its ACL too.
    let marker = format!("{}=", cookie.name);
    let (kept, token) = match query.strip_prefix(&marker) {
        Some(token) => ("", token),
        None => {
            let at = query
                .find(&format!("&{marker}"))
                .ok_or_else(|| ProxyError::Internal("the signed URL carries no token".into()))?;
            (&query[..at], &query[at + 1 + marker.len()..])
        }
    };
    let (_, path) =
        crate::scheme::split_origin(address).map_err(|e| ProxyError::Internal(e.into()))?;
    let secure = if cookie.secure { "; Secure" } else { "" };
    let set_cookie = format!(
        "{}={token}; Domain={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie.name, cookie.domain
    );
    let set_cookie =
        HeaderValue::try_from(set_cookie).map_err(|e| ProxyError::Internal(e.into()))?;
    let bare = if kept.is_empty() {
        address.to_owned()
    } else {
        format!("{address}?{kept}")
    };
    Ok((bare, set_cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(secure: bool) -> TokenCookie {
        TokenCookie {
            name: "hdnts".into(),
            domain: "example.com".into(),
            secure,
        }
    }

    #[test]
    fn the_token_moves_from_the_query_into_a_cookie_for_the_object_path() {
        let signed =
            "https://media.example.com/v/a&b.mp4?w=1&hdnts=st=1~exp=2~acl=/v/a&b.mp4~hmac=ff";
        let (bare, set_cookie) = token_in_cookie(&cookie(true), signed, 90).expect("moved");
        assert_eq!(bare, "https://media.example.com/v/a&b.mp4?w=1");
        assert_eq!(
            set_cookie,
            "hdnts=st=1~exp=2~acl=/v/a&b.mp4~hmac=ff; Domain=example.com; Path=/v/a&b.mp4; \
             Max-Age=90; HttpOnly; SameSite=Lax; Secure"
        );
        let (bare, set_cookie) = token_in_cookie(
            &cookie(false),
            "http://h.example.com/x?hdnts=st=1~hmac=0",
            5,
        )
        .expect("moved");
        assert_eq!(bare, "http://h.example.com/x");
        assert!(
            set_cookie
                .to_str()
                .is_ok_and(|v| v.ends_with("SameSite=Lax"))
        );
        assert!(token_in_cookie(&cookie(false), "http://h.example.com/x?a=1", 5).is_err());
    }
}

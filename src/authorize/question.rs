//! The question put to the `authorize_url` service for one request: the query naming what is to
//! be signed, the `X-Original-*` headers, and the client's `Cookie` and `Authorization`, nothing
//! else of the client's; and its digest, the key its answer is cached under.

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::error::ProxyError;
use crate::filelink::Handle;

/// `X-Original-URI`: the client's request target, as nginx's `auth_request` sends it.
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// `X-Original-Method`: the client's request method.
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// What a query value keeps unencoded: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a client asks a route to sign: a file and its tasks, or (for an upload policy) nothing
/// but the route's policy.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The file, none for an upload policy.
    pub file: Option<SubjectFile<'a>>,
    /// Its transformation tasks, in order (client credentials already dropped).
    pub tasks: &'a [&'a str],
}

/// The file a client asks for.
#[derive(Debug, Clone, Copy)]
pub enum SubjectFile<'a> {
    /// A file on the CDN: the service is told `handle=…`.
    Handle(Handle),
    /// An external URL source: the service is told `source=…`.
    Source(&'a str),
    /// An object's URL on a route with another scheme (S3, CloudFront, imgix, Akamai): the
    /// service is told `object=…`.
    Object(&'a str),
}

/// Everything the authorization service is told about one request.
#[derive(Debug)]
pub struct Question {
    /// `handle=…&tasks=…&route=…` (`source=…` for an external source, only `route=…` for an
    /// upload policy), percent-encoded.
    pub query: String,
    /// The client's request target and method, and its `Cookie` (HTTP/2's split cookies joined
    /// with `; `, as RFC 9113 says) and `Authorization` values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Question {
    /// The question for `subject` on route `route`, from the client's request head.
    pub fn new(route: &str, subject: Subject<'_>, parts: &Parts) -> Result<Self, ProxyError> {
        let mut query = String::with_capacity(64);
        if let Some(file) = subject.file {
            let tasks = subject.tasks.join("/");
            let (name, value) = match &file {
                SubjectFile::Handle(handle) => ("handle=", handle.as_str()),
                SubjectFile::Source(source) => ("source=", *source),
                SubjectFile::Object(url) => ("object=", *url),
            };
            query.push_str(name);
            query.extend(utf8_percent_encode(value, QUERY_VALUE));
            query.push_str("&tasks=");
            query.extend(utf8_percent_encode(&tasks, QUERY_VALUE));
            query.push('&');
        }
        query.push_str("route=");
        query.extend(utf8_percent_encode(route, QUERY_VALUE));

        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let internal = |e: http::header::InvalidHeaderValue| ProxyError::Internal(e.into());
        let mut headers = vec![
            (
                X_ORIGINAL_URI,
                HeaderValue::from_str(target).map_err(|_| ProxyError::BadTarget)?,
            ),
            (
                X_ORIGINAL_METHOD,
                HeaderValue::from_str(parts.method.as_str()).map_err(internal)?,
            ),
        ];
        let cookies: Vec<&[u8]> = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if !cookies.is_empty() {
            let joined = cookies.join(&b"; "[..]);
            headers.push((
                header::COOKIE,
                HeaderValue::from_bytes(&joined).map_err(internal)?,
            ));
        }
        for value in parts.headers.get_all(header::AUTHORIZATION) {
            headers.push((header::AUTHORIZATION, value.clone()));
        }
        Ok(Self { query, headers })
    }

    /// A SHA-256 digest of everything the service is told: two requests with the same digest
    /// are ones it cannot tell apart, so its answer to one holds for the other, and never for
    /// another user's credentials.
    pub fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different questions hash the same bytes.
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        field(self.query.as_bytes());
        for (name, value) in &self.headers {
            field(name.as_str().as_bytes());
            field(value.as_bytes());
        }
        hash.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::get(format!("/img/resize=width:3/{H}?dl=1"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request").into_parts().0
    }

    fn question(headers: &[(&str, &str)]) -> Question {
        let handle = Handle::parse(H).expect("handle");
        let subject = Subject {
            file: Some(SubjectFile::Handle(handle)),
            tasks: &["resize=width:3", "flip"],
        };
        Question::new("my images", subject, &parts(headers)).expect("question")
    }

    #[test]
    fn the_service_gets_the_file_the_tasks_and_the_clients_credentials_only() {
        let asked = question(&[
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "10.0.0.1"),
            ("user-agent", "x"),
        ]);
        assert_eq!(
            asked.query,
            format!("handle={H}&tasks=resize%3Dwidth%3A3%2Fflip&route=my%20images")
        );
        let sent: Vec<(&str, &str)> = asked
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            sent,
            [
                ("x-original-uri", &*format!("/img/resize=width:3/{H}?dl=1")),
                ("x-original-method", "GET"),
                ("cookie", "a=1; b=2"),
                ("authorization", "Bearer t"),
            ]
        );
    }

    #[test]
    fn an_upload_policy_question_names_the_route_only() {
        let subject = Subject {
            file: None,
            tasks: &[],
        };
        let asked = Question::new("upload", subject, &parts(&[])).expect("question");
        assert_eq!(asked.query, "route=upload");
        let external = Subject {
            file: Some(SubjectFile::Source("https://example.com/a b.jpg")),
            tasks: &["flip"],
        };
        let asked = Question::new("images", external, &parts(&[])).expect("question");
        assert_eq!(
            asked.query,
            "source=https%3A%2F%2Fexample.com%2Fa%20b.jpg&tasks=flip&route=images"
        );
    }

    #[test]
    fn the_digest_differs_for_every_difference_in_credentials() {
        let anonymous = question(&[]).digest();
        assert_eq!(anonymous, question(&[]).digest());
        let alice = question(&[("cookie", "session=alice")]).digest();
        let bob = question(&[("cookie", "session=bob")]).digest();
        let bearer = question(&[("authorization", "session=alice")]).digest();
        let unrelated = question(&[("accept", "image/webp")]).digest();
        assert!(alice != bob && alice != anonymous && alice != bearer);
        assert_eq!(
            unrelated, anonymous,
            "headers never sent do not split the cache"
        );
    }
}

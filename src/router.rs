//! The route table: compiled once at start, matched by longest prefix on whole path segments.

use std::sync::Arc;

use crate::cache::BucketCache;
use crate::config::{Config, Mode, Route};
use crate::error::StartupError;
use crate::signer::RouteSigner;
use crate::upstream::UpstreamClient;

/// Most signed URLs a site route keeps (a few hundred bytes each, so a few MiB at most).
const SIGNED_URL_CACHE_MAX: std::num::NonZeroUsize =
    std::num::NonZeroUsize::new(20_000).expect("20000 is not zero");

/// A route ready to serve: its config, its signer (and cache), its upstream client.
pub struct ActiveRoute {
    /// The route as configured.
    pub route: Route,
    /// Signs for this route.
    pub signer: RouteSigner,
    /// The upstream client, for routes with an upstream.
    pub upstream: Option<UpstreamClient>,
    /// Site routes: signed forms of the URLs their pages carry, per expiry bucket, so a page
    /// served again is rewritten from cache.
    pub signed_urls: Option<BucketCache<String, String>>,
}

/// All routes, longest prefix first.
pub struct Router {
    routes: Vec<Arc<ActiveRoute>>,
}

impl Router {
    /// Compiles the routes of `config`: one signer and one upstream client each.
    pub fn new(config: &Config) -> Result<Self, StartupError> {
        let mut routes = config
            .routes
            .iter()
            .map(|route| {
                let upstream = match route.upstream {
                    Some(_) => Some(UpstreamClient::new(route)?),
                    None => None,
                };
                let signed_urls = (route.mode == Mode::Site)
                    .then(|| BucketCache::new(route.signing.cache_size.min(SIGNED_URL_CACHE_MAX)));
                Ok(Arc::new(ActiveRoute {
                    signer: RouteSigner::new(route),
                    route: route.clone(),
                    upstream,
                    signed_urls,
                }))
            })
            .collect::<Result<Vec<_>, StartupError>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.route.prefix.len()));
        Ok(Self { routes })
    }

    /// The route for `path` and the rest of the path after its prefix.
    ///
    /// A prefix matches only on a segment boundary: `/img` serves `/img` and `/img/x`, never
    /// `/imgx`; a prefix ending in `/` serves everything below it.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Arc<ActiveRoute>, &'p str)> {
        self.routes.iter().find_map(|active| {
            let prefix = active.route.prefix.as_str();
            let rest = path.strip_prefix(prefix)?;
            let boundary = prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/');
            boundary.then_some((active, rest))
        })
    }

    /// The route called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ActiveRoute>> {
        self.routes.iter().find(|r| r.route.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let toml = r#"
            [signing]
            secret_env = "S"
            [[route]]
            name = "site"
            prefix = "/"
            mode = "site"
            upstream = "http://127.0.0.1:3000"
            [[route]]
            name = "images"
            prefix = "/img/"
            mode = "proxy"
            upstream = "http://127.0.0.1:3001"
            [[route]]
            name = "thumbs"
            prefix = "/img/thumbs/"
            mode = "proxy"
            upstream = "http://127.0.0.1:3001"
            [[route]]
            name = "upload"
            prefix = "/upload-policy"
            mode = "upload-policy"
        "#;
        let config = Config::from_toml_str(toml, |_| Some("x".into())).expect("valid");
        Router::new(&config).expect("compiles")
    }

    #[test]
    fn longest_prefix_on_segment_boundaries_wins() {
        let router = router();
        let find = |p| {
            router
                .find(p)
                .map(|(r, rest)| (r.route.name.as_str(), rest))
        };
        assert_eq!(find("/img/abc"), Some(("images", "abc")));
        assert_eq!(find("/img/thumbs/abc"), Some(("thumbs", "abc")));
        assert_eq!(find("/upload-policy"), Some(("upload", "")));
        assert_eq!(find("/upload-policy/x"), Some(("upload", "/x")));
        assert_eq!(find("/upload-policyx"), Some(("site", "upload-policyx")));
        assert_eq!(find("/img"), Some(("site", "img")));
        assert_eq!(find("/"), Some(("site", "")));
        assert!(router.by_name("thumbs").is_some());
    }
}

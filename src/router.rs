//! The route table: compiled once at start, matched by longest prefix on whole path segments.

use std::sync::Arc;

use crate::authorize::Authorizer;
use crate::config::{
    Config, FileServing, Mode, ProxyRoute, Route, RouteKind, SiteRoute, UploadPolicyRoute, Upstream,
};
use crate::error::StartupError;
use crate::metrics::{Metrics, RouteMetrics};
use crate::rewrite::SiteUrls;
use crate::rewrite::compress::{ENCODER_BUDGET, EncoderBudget};
use crate::signer::RouteSigner;
use crate::upstream::UpstreamClient;

/// A route ready to serve: its name and prefix, its signer (and cache), and what its mode needs.
pub struct ActiveRoute {
    /// `name`, for logs.
    pub name: String,
    /// `prefix`.
    pub prefix: String,
    /// Signs for this route.
    pub signer: Arc<RouteSigner>,
    /// Asks `authorize_url` before signing, when the route sets it.
    pub authorizer: Option<Authorizer>,
    /// The mode, with its upstream client or settings.
    pub kind: ActiveKind,
    /// The route's metric handles, shared with every worker.
    pub metrics: Arc<RouteMetrics>,
}

/// What each mode needs at request time; built once from the route's [`RouteKind`].
pub enum ActiveKind {
    /// `proxy`: the pooled client to the CDN, and how files are served.
    Proxy(ActiveProxy),
    /// `redirect`: the CDN the `Location` points at.
    Redirect(Upstream),
    /// `site`: the pooled client to the site and the signing of the URLs in its answers.
    Site(ActiveSite),
    /// `upload-policy`.
    UploadPolicy(UploadPolicyRoute),
}

/// A proxy route ready to serve.
pub struct ActiveProxy {
    /// The pooled client to the CDN.
    pub client: UpstreamClient,
    /// `inline_types` and `cors_origins`.
    pub serving: FileServing,
}

/// A site route ready to serve.
pub struct ActiveSite {
    /// The pooled client to the site.
    pub client: UpstreamClient,
    /// Signs the CDN URLs in its answers (and caches the signed forms per bucket).
    pub urls: Arc<SiteUrls>,
    /// `max_request_body`.
    pub max_request_body: u64,
    /// How long a WebSocket may stay silent; `None`: upgrades are not forwarded.
    pub websocket_idle: Option<std::time::Duration>,
    /// `preserve_host`.
    pub preserve_host: bool,
    /// The worker's memory for compressing answers, shared by its site routes.
    pub encoders: Arc<EncoderBudget>,
}

impl ActiveRoute {
    /// Builds `route`'s signer, cache, authorizer and upstream client, counting into
    /// `metrics`; a site route compresses within `encoders`.
    pub fn new(
        route: &Route,
        metrics: Arc<RouteMetrics>,
        encoders: &Arc<EncoderBudget>,
    ) -> Result<Self, StartupError> {
        let signer = Arc::new(RouteSigner::for_route(route).with_metrics(metrics.signing.clone()));
        let forbidden = &metrics.upstream.forbidden;
        let kind = match &route.kind {
            RouteKind::Proxy(ProxyRoute { fetch, serving }) => ActiveKind::Proxy(ActiveProxy {
                client: UpstreamClient::new(&route.name, fetch, forbidden.clone())?,
                serving: serving.clone(),
            }),
            RouteKind::Redirect { upstream } => ActiveKind::Redirect(upstream.clone()),
            RouteKind::Site(SiteRoute {
                fetch,
                rewrite,
                max_request_body,
                websocket_idle,
                preserve_host,
            }) => ActiveKind::Site(ActiveSite {
                client: UpstreamClient::new(&route.name, fetch, forbidden.clone())?,
                urls: Arc::new(SiteUrls::new(
                    Arc::clone(&signer),
                    rewrite.clone(),
                    route.signing.cache_size,
                )),
                max_request_body: *max_request_body,
                websocket_idle: *websocket_idle,
                preserve_host: *preserve_host,
                encoders: Arc::clone(encoders),
            }),
            RouteKind::UploadPolicy(upload) => ActiveKind::UploadPolicy(upload.clone()),
        };
        Ok(Self {
            name: route.name.clone(),
            prefix: route.prefix.clone(),
            signer,
            authorizer: Authorizer::for_route(route)?,
            kind,
            metrics,
        })
    }

    /// The route's mode.
    pub fn mode(&self) -> Mode {
        match self.kind {
            ActiveKind::Proxy(_) => Mode::Proxy,
            ActiveKind::Redirect(_) => Mode::Redirect,
            ActiveKind::Site(_) => Mode::Site,
            ActiveKind::UploadPolicy(_) => Mode::UploadPolicy,
        }
    }
}

/// All routes, longest prefix first.
pub struct Router {
    routes: Vec<Arc<ActiveRoute>>,
}

impl Router {
    /// Compiles the routes of `config`: one signer and one upstream client each, counting into
    /// the route's handles in `metrics` (unregistered ones for a route `metrics` lacks), and one
    /// [`EncoderBudget`] for the worker.
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Self, StartupError> {
        let encoders = Arc::new(EncoderBudget::new(ENCODER_BUDGET));
        let mut routes = config
            .routes
            .iter()
            .map(|route| {
                let handles = metrics.route(&route.name).map_or_else(
                    || Arc::new(RouteMetrics::unregistered(&route.name)),
                    Arc::clone,
                );
                ActiveRoute::new(route, handles, &encoders).map(Arc::new)
            })
            .collect::<Result<Vec<_>, StartupError>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes })
    }

    /// The route for `path` and the rest of the path after its prefix.
    ///
    /// A prefix matches only on a segment boundary: `/img` serves `/img` and `/img/x`, never
    /// `/imgx`; a prefix ending in `/` serves everything below it.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Arc<ActiveRoute>, &'p str)> {
        self.routes.iter().find_map(|active| {
            let prefix = active.prefix.as_str();
            let rest = path.strip_prefix(prefix)?;
            let boundary = prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/');
            boundary.then_some((active, rest))
        })
    }

    /// The route called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ActiveRoute>> {
        self.routes.iter().find(|r| r.name == name)
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
        Router::new(&config, &Metrics::new(&config)).expect("compiles")
    }

    #[test]
    fn longest_prefix_on_segment_boundaries_wins() {
        let router = router();
        let find = |p| router.find(p).map(|(r, rest)| (r.name.as_str(), rest));
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

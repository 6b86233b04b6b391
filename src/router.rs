//! The route table: compiled once at start, matched by longest prefix on whole path segments.

use std::sync::Arc;

use crate::authorize::Authorizer;
use crate::config::{
    Config, FileServing, Mode, ProxyRoute, RedirectRoute, Route, RouteKind, SiteRoute,
    UploadPolicyRoute, VerifyChecks, VerifyRoute,
};
use crate::error::StartupError;
use crate::metrics::{Metrics, RouteMetrics};
use crate::rewrite::SiteUrls;
use crate::rewrite::compress::{ENCODER_BUDGET, EncoderBudget};
use crate::signer::RouteSigner;
use crate::upstream::UpstreamClient;

/// A route ready to serve: its name and prefix, its signer (and cache), and what its mode needs.
pub struct ActiveRoute {
    /// `name`, for logs: shared, so each request's access line takes it without a copy.
    pub name: Arc<str>,
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
    /// `redirect`: the CDN the `Location` points at, and the cookie its token may go in.
    Redirect(RedirectRoute),
    /// `site`: the pooled client to the site and the signing of the URLs in its answers.
    Site(ActiveSite),
    /// `upload-policy`.
    UploadPolicy(UploadPolicyRoute),
    /// `verify`: the pooled client to the private origin, and how credentials are checked.
    Verify(ActiveVerify),
}

/// A verify route ready to serve.
pub struct ActiveVerify {
    /// The pooled client to the private origin.
    pub client: UpstreamClient,
    /// `inline_types` and `cors_origins`.
    pub serving: FileServing,
    /// `expired_status`, `expiry_grace`, `origin_container`.
    pub checks: VerifyChecks,
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
        Self::carrying(route, metrics, encoders, None)
    }

    /// [`ActiveRoute::new`], keeping `previous`'s signer and credential cache (and a site
    /// route's signed-URL cache) when `route` signs exactly as `previous` did: same mode, same
    /// secret, same signing settings, same policy template and tasks. Everything else (upstream
    /// clients and their pools, the authorizer) is built fresh.
    pub fn carrying(
        route: &Route,
        metrics: Arc<RouteMetrics>,
        encoders: &Arc<EncoderBudget>,
        previous: Option<&ActiveRoute>,
    ) -> Result<Self, StartupError> {
        let kept = previous.filter(|old| old.signs_like(route));
        let signer = match kept {
            Some(old) => Arc::clone(&old.signer),
            None => {
                let signer = RouteSigner::for_route(route)
                    .with_metrics(metrics.signing.clone())
                    .with_scheme_of(&route.scheme)
                    .map_err(key_error(route, "`secret_file`"))?;
                Arc::new(signer)
            }
        };
        let (upstream_metrics, max_skew) = (&metrics.upstream, route.signing.max_clock_skew);
        let kind = match &route.kind {
            RouteKind::Proxy(ProxyRoute { fetch, serving }) => ActiveKind::Proxy(ActiveProxy {
                client: UpstreamClient::new(&route.name, fetch, upstream_metrics, max_skew)?,
                serving: serving.clone(),
            }),
            RouteKind::Redirect(redirect) => ActiveKind::Redirect(redirect.clone()),
            RouteKind::Site(SiteRoute {
                fetch,
                rewrite,
                max_request_body,
                websocket_idle,
                preserve_host,
            }) => {
                let kept_urls = match kept.map(|old| &old.kind) {
                    Some(ActiveKind::Site(old)) if old.urls.rules() == rewrite => {
                        Some(Arc::clone(&old.urls))
                    }
                    _ => None,
                };
                ActiveKind::Site(ActiveSite {
                    client: UpstreamClient::new(&route.name, fetch, upstream_metrics, max_skew)?,
                    urls: match kept_urls {
                        Some(urls) => urls,
                        None => Arc::new(
                            SiteUrls::new(
                                Arc::clone(&signer),
                                rewrite.clone(),
                                route.signing.cache_size,
                            )
                            .map_err(key_error(route, "[[route.cdn]] `secret_file`"))?,
                        ),
                    },
                    max_request_body: *max_request_body,
                    websocket_idle: *websocket_idle,
                    preserve_host: *preserve_host,
                    encoders: Arc::clone(encoders),
                })
            }
            RouteKind::UploadPolicy(upload) => ActiveKind::UploadPolicy(upload.clone()),
            RouteKind::Verify(VerifyRoute {
                fetch,
                serving,
                checks,
            }) => ActiveKind::Verify(ActiveVerify {
                client: UpstreamClient::new(&route.name, fetch, upstream_metrics, max_skew)?,
                serving: serving.clone(),
                checks: checks.clone(),
            }),
        };
        Ok(Self {
            name: Arc::from(route.name.as_str()),
            prefix: route.prefix.clone(),
            signer,
            authorizer: Authorizer::for_route(route)?,
            kind,
            metrics,
        })
    }

    /// Whether `route` would sign exactly as this route does, so its credentials (and cache)
    /// stay valid: same name and mode, secret, signing settings, policy, tasks, API key and
    /// external sources.
    pub fn signs_like(&self, route: &Route) -> bool {
        *self.name == *route.name
            && self.mode() == route.mode()
            && self.signer.signing() == &route.signing
            && self.signer.template() == &route.policy
            && self.signer.tasks() == &route.tasks
            && self.signer.app() == route.app.as_ref()
            && self.signer.scheme_config() == &route.scheme
    }

    /// The route's mode.
    pub fn mode(&self) -> Mode {
        match self.kind {
            ActiveKind::Proxy(_) => Mode::Proxy,
            ActiveKind::Redirect(_) => Mode::Redirect,
            ActiveKind::Site(_) => Mode::Site,
            ActiveKind::UploadPolicy(_) => Mode::UploadPolicy,
            ActiveKind::Verify(_) => Mode::Verify,
        }
    }
}

/// Turns what is wrong with the key at `key` of `route` (a scheme's key that does not sign)
/// into the startup error naming it.
fn key_error<'a>(route: &'a Route, key: &'static str) -> impl FnOnce(String) -> StartupError + 'a {
    move |reason| {
        StartupError::Config(crate::config::ConfigError::Invalid {
            key: format!("route `{}`: {key}", route.name),
            reason,
        })
    }
}

/// All routes, longest prefix first.
pub struct Router {
    routes: Vec<Arc<ActiveRoute>>,
    /// The worker's memory for compressing answers: one per worker, kept across reloads so
    /// answers of the old and the new routes draw on the same bound.
    encoders: Arc<EncoderBudget>,
}

impl Router {
    /// Compiles the routes of `config`: one signer and one upstream client each, counting into
    /// the route's handles in `metrics` (made there for a route it lacks), and one
    /// [`EncoderBudget`] for the worker.
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Self, StartupError> {
        Self::build(
            config,
            metrics,
            Arc::new(EncoderBudget::new(ENCODER_BUDGET)),
            None,
        )
    }

    /// The routes of `config`, for a reload of this router's worker: a route that signs as
    /// the one of its name here keeps that one's signer and caches ([`ActiveRoute::carrying`]),
    /// the worker keeps its [`EncoderBudget`], and everything else is built fresh.
    pub fn reloaded(&self, config: &Config, metrics: &Metrics) -> Result<Self, StartupError> {
        Self::build(config, metrics, Arc::clone(&self.encoders), Some(self))
    }

    fn build(
        config: &Config,
        metrics: &Metrics,
        encoders: Arc<EncoderBudget>,
        previous: Option<&Router>,
    ) -> Result<Self, StartupError> {
        let mut routes = config
            .routes
            .iter()
            .map(|route| {
                let handles = metrics.route_handles(route);
                let old = previous.and_then(|router| router.by_name(&route.name));
                ActiveRoute::carrying(route, handles, &encoders, old.map(Arc::as_ref)).map(Arc::new)
            })
            .collect::<Result<Vec<_>, StartupError>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes, encoders })
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

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Arc<ActiveRoute>] {
        &self.routes
    }

    /// The route called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ActiveRoute>> {
        self.routes.iter().find(|r| *r.name == *name)
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
        let find = |p| router.find(p).map(|(r, rest)| (&*r.name, rest));
        assert_eq!(find("/img/abc"), Some(("images", "abc")));
        assert_eq!(find("/img/thumbs/abc"), Some(("thumbs", "abc")));
        assert_eq!(find("/upload-policy"), Some(("upload", "")));
        assert_eq!(find("/upload-policy/x"), Some(("upload", "/x")));
        assert_eq!(find("/upload-policyx"), Some(("site", "upload-policyx")));
        assert_eq!(find("/img"), Some(("site", "img")));
        assert_eq!(find("/"), Some(("site", "")));
        assert!(router.by_name("thumbs").is_some());
    }

    const RELOADED: &str = r#"
        [signing]
        secret_env = "S"
        ttl = "1h"
        [[route]]
        name = "go"
        prefix = "/go/"
        mode = "redirect"
        upstream = "https://cdn.filestackcontent.com"
        [[route]]
        name = "site"
        prefix = "/"
        mode = "site"
        upstream = "http://127.0.0.1:3000"
    "#;

    fn compiled(toml: &str, secret: &str) -> Config {
        Config::from_toml_str(toml, |_| Some(secret.into())).expect("valid")
    }

    fn site_urls(router: &Router) -> Arc<SiteUrls> {
        match &router.by_name("site").expect("site route").kind {
            ActiveKind::Site(site) => Arc::clone(&site.urls),
            _ => panic!("a site route"),
        }
    }

    #[test]
    fn a_route_that_signs_alike_keeps_its_signer_and_cache_across_a_reload() {
        let config = compiled(RELOADED, "x");
        let metrics = Metrics::new(&config);
        let router = Router::new(&config, &metrics).expect("compiles");
        let handle = crate::filelink::Handle::parse("KW9EJhYtS6y48Whm2S6D").expect("handle");
        let signer = Arc::clone(&router.by_name("go").expect("go").signer);
        let (_, outcome) = signer.credentials(1_000_000, Some(handle));
        assert_eq!(outcome, crate::cache::CacheOutcome::Miss);

        // Another upstream and one more route: signing is unchanged, so the cache stays.
        let moved = RELOADED.replace("https://cdn.filestackcontent.com", "https://cdn.example")
            + "[[route]]\nname = \"up\"\nprefix = \"/up\"\nmode = \"upload-policy\"\n";
        let reloaded = router
            .reloaded(&compiled(&moved, "x"), &metrics)
            .expect("compiles");
        let kept = &reloaded.by_name("go").expect("go").signer;
        assert!(Arc::ptr_eq(kept, &signer));
        assert_eq!(
            kept.credentials(1_000_000, Some(handle)).1,
            crate::cache::CacheOutcome::Hit
        );
        assert!(Arc::ptr_eq(&site_urls(&reloaded), &site_urls(&router)));
        assert!(Arc::ptr_eq(&reloaded.encoders, &router.encoders));
        assert!(reloaded.by_name("up").is_some());
        assert!(metrics.route("up").is_some(), "an added route is counted");

        // A new secret, a new ttl or another mode: signed afresh, with an empty cache.
        for (toml, secret) in [
            (RELOADED.to_owned(), "y"),
            (RELOADED.replace("ttl = \"1h\"", "ttl = \"2h\""), "x"),
            (
                RELOADED.replace("mode = \"redirect\"", "mode = \"proxy\""),
                "x",
            ),
        ] {
            let fresh = router
                .reloaded(&compiled(&toml, secret), &metrics)
                .expect("compiles");
            let fresh = &fresh.by_name("go").expect("go").signer;
            assert!(!Arc::ptr_eq(fresh, &signer), "{toml} {secret}");
            assert_eq!(fresh.cache().hits() + fresh.cache().misses(), 0);
        }
    }

    #[test]
    fn a_reload_that_changes_the_external_sources_takes_effect_at_once() {
        let with_sources = |sources: &str| {
            RELOADED.replace(
                "upstream = \"https://cdn.filestackcontent.com\"",
                &format!(
                    "upstream = \"https://cdn.filestackcontent.com\"\n\
                     calls = [\"read\", \"convert\"]\napi_key = \"AbCdEfGhIjKlMnOpQrStUvW\"\n\
                     external_sources = [{sources}]"
                ),
            )
        };
        let config = compiled(&with_sources("\"https://a.example/\""), "x");
        let metrics = Metrics::new(&config);
        let router = Router::new(&config, &metrics).expect("compiles");
        let source = crate::external::Source::parse("https://a.example/x.png").expect("plain");
        let signer = &router.by_name("go").expect("go").signer;
        assert!(signer.app().is_some_and(|app| app.sources.allows(&source)));
        let reloaded = router
            .reloaded(
                &compiled(&with_sources("\"https://b.example/\""), "x"),
                &metrics,
            )
            .expect("compiles");
        let signer = &reloaded.by_name("go").expect("go").signer;
        assert!(!signer.app().is_some_and(|app| app.sources.allows(&source)));
    }

    #[test]
    fn a_reload_that_changes_a_cdn_entry_signs_its_urls_afresh() {
        let with_entry = |region: &str| {
            format!(
                "{RELOADED}[[route.cdn]]\nhosts = [\"b.s3.amazonaws.com\"]\nscheme = \"s3\"\n\
                 access_key_id = \"AKIAEXAMPLE\"\nregion = \"{region}\"\nsecret_env = \"S3\"\n"
            )
        };
        let url = "https://b.s3.amazonaws.com/cat.jpg";
        let config = compiled(&with_entry("eu-west-1"), "x");
        let metrics = Metrics::new(&config);
        let router = Router::new(&config, &metrics).expect("compiles");
        let signed = site_urls(&router)
            .at(1_800_000_000)
            .sign(url)
            .expect("signed");
        assert!(signed.contains("%2Feu-west-1%2F"), "{signed}");
        let same = router
            .reloaded(&compiled(&with_entry("eu-west-1"), "x"), &metrics)
            .expect("compiles");
        assert!(Arc::ptr_eq(&site_urls(&same), &site_urls(&router)));
        let moved = router
            .reloaded(&compiled(&with_entry("us-east-2"), "x"), &metrics)
            .expect("compiles");
        let signed = site_urls(&moved)
            .at(1_800_000_000)
            .sign(url)
            .expect("signed");
        assert!(signed.contains("%2Fus-east-2%2F"), "{signed}");
    }
}

//! `signgate demo`: a stand-in CDN, a small gallery site with bare CDN URLs, and the gateway in
//! front of both, in one process, with a random secret; and a folder of pictures behind a second
//! gateway with a verify route, whose URLs the first gateway signs: the whole signed-file path
//! run by signgate alone; and a stand-in S3-compatible bucket that serves only SigV4 presigned
//! URLs, which the first gateway hands out from a redirect route with `scheme = "s3"`, so the
//! gallery page mixes signing schemes. Nothing outside is contacted.

pub mod cdn;
pub mod folder;
pub mod images;
pub mod live;
pub mod s3;
pub mod site;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::admin::{self, Admin};
use crate::body::ResponseBody;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::StartupError;
use crate::filelink::{FileRef, UrlStyle, signed_url, strip_api_key};
use crate::policy::{Call, Policy, bucketed_expiry};
use crate::secret::Secret;
use crate::server::{AppState, serve};

/// Largest upload the demo's upload policy allows.
pub const DEMO_MAX_SIZE: &str = "1MB";
/// The variable the demo's config names for its secret, and the one its `explain` hint sets.
pub const DEMO_SECRET_ENV: &str = "SIGNGATE_DEMO_SECRET";
/// The variable the demo's config names for the bucket's secret access key.
pub const DEMO_S3_SECRET_ENV: &str = "SIGNGATE_DEMO_S3_SECRET";
/// The gateway's redirect route to the bucket, as the gallery page writes its paths: `/s3/KEY`
/// answers 307 to the object's presigned URL.
pub const DEMO_S3_ROUTE: &str = "/s3";
/// The demo app's public API key: its pages write URLs as `client.transform()` does, after it.
pub const DEMO_API_KEY: &str = "DemoApiKey0123456789Ab";
/// Where the partner server keeps the picture the gallery's third row shows.
const PARTNER_PICTURE: &str = "/pictures/partner.png";
/// How long the demo's URLs are valid, at least.
const DEMO_TTL: Duration = Duration::from_secs(3600);
/// Expiries are rounded up to a multiple of this.
const DEMO_BUCKET: Duration = Duration::from_secs(300);

/// The servers of a running demo.
pub struct Demo {
    /// The gateway: what a browser opens.
    pub gateway: SocketAddr,
    /// The stand-in CDN.
    pub cdn: SocketAddr,
    /// The gallery site (behind the gateway).
    pub site: SocketAddr,
    /// The gateway's admin listener: health, readiness, metrics, status page.
    pub admin: SocketAddr,
    /// The second gateway: a verify route in front of the folder.
    pub verify: SocketAddr,
    /// The file server of the folder of pictures (checks nothing: only `verify` should reach it).
    pub folder: SocketAddr,
    /// A partner's server with a picture the gallery shows as an external source.
    pub partner: SocketAddr,
    /// The stand-in S3-compatible store: serves its bucket only to SigV4 presigned URLs.
    pub s3: SocketAddr,
    gateway_listener: TcpListener,
    state: Arc<AppState>,
    verify_listener: TcpListener,
    verify_state: Arc<AppState>,
    admin_listener: TcpListener,
    admin_state: Arc<Admin>,
    /// Random per run and signs only for this demo's CDN, so printing it is safe.
    secret_text: String,
    /// The bucket's secret access key: random per run, for this demo's stand-in S3 only.
    s3_secret_text: String,
    /// The picture the gallery page explains, as the site writes it (no credentials).
    explained_picture: Option<String>,
}

impl Demo {
    /// Binds the gateway on `listen` and the CDN and site on ports of their own, and starts the
    /// CDN and the site. The gateway serves once [`Demo::serve`] runs.
    pub async fn start(listen: SocketAddr) -> Result<Self, StartupError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })
        };
        let gateway_listener = bind(listen).await?;
        let gateway = local(&gateway_listener, listen)?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let cdn_listener = bind(loopback).await?;
        let cdn_addr = local(&cdn_listener, loopback)?;
        let site_listener = bind(loopback).await?;
        let site_addr = local(&site_listener, loopback)?;
        let admin_listener = bind(loopback).await?;
        let admin_addr = local(&admin_listener, loopback)?;
        let verify_listener = bind(loopback).await?;
        let verify_addr = local(&verify_listener, loopback)?;
        let folder_listener = bind(loopback).await?;
        let folder_addr = local(&folder_listener, loopback)?;
        let partner_listener = bind(loopback).await?;
        let partner_addr = local(&partner_listener, loopback)?;
        let s3_listener = bind(loopback).await?;
        let s3_addr = local(&s3_listener, loopback)?;

        let secret_text = random_hex(32);
        let secret = Secret::new(secret_text.clone()).map_err(|_| StartupError::NoRandomness)?;
        let cdn_base = format!("http://{cdn_addr}");
        let cdn = Arc::new(cdn::StandInCdn::new(secret, cdn_base.clone()));
        let (folder, folder_pictures) =
            folder::FolderOrigin::create().map_err(StartupError::Runtime)?;
        let folder = Arc::new(folder);
        // The bucket's access key, random per run like the secret, and signing for nothing else.
        let s3_key_id = format!("DEMO{}", random_hex(8).to_uppercase());
        let s3_secret_text = random_hex(20);
        let s3_secret = crate::secret::TextSecret::new(s3_secret_text.clone())
            .map_err(|_| StartupError::NoRandomness)?;
        let bucket = s3::StandInS3::new(s3_key_id.clone(), s3_secret, s3_addr.to_string())
            .map_err(|_| StartupError::NoRandomness)?;
        let bucket_pictures = bucket.pictures();
        let bucket = Arc::new(bucket);
        let site = Arc::new(
            site::GallerySite::new(cdn_base, &cdn, format!("http://{site_addr}"))
                .with_private_row(format!("http://{verify_addr}"), folder_pictures)
                .with_api_key(
                    DEMO_API_KEY,
                    vec![(
                        format!("http://{partner_addr}{PARTNER_PICTURE}"),
                        "Partner".to_owned(),
                    )],
                )
                .with_bucket_row(
                    &format!("http://{s3_addr}/{}", s3::DEMO_S3_BUCKET),
                    DEMO_S3_ROUTE,
                    bucket_pictures,
                ),
        );
        let explained_picture = site.explained_picture();
        spawn_server(cdn_listener, move |request| {
            let cdn = Arc::clone(&cdn);
            async move { cdn.handle(request).await }
        });
        spawn_server(site_listener, move |request| {
            let site = Arc::clone(&site);
            async move { site.handle(request).await }
        });
        spawn_server(folder_listener, move |request| {
            let folder = Arc::clone(&folder);
            async move { folder.handle(request).await }
        });
        let partner_picture = bytes::Bytes::from(images::pop_art_png(
            480,
            cdn::STARTING_PICTURES[0].1,
            cdn::STARTING_PICTURES[3].2,
        ));
        spawn_server(partner_listener, move |request| {
            let picture = partner_picture.clone();
            async move { partner_answer(&request, picture) }
        });
        spawn_server(s3_listener, move |request| {
            let bucket = Arc::clone(&bucket);
            async move { bucket.answer(&request, SystemClock.now_unix()) }
        });

        let toml = demo_config(
            &Addresses {
                gateway,
                cdn: cdn_addr,
                site: site_addr,
                admin: admin_addr,
                verify: verify_addr,
                partner: partner_addr,
                s3: s3_addr,
            },
            &s3_key_id,
        );
        // Each secret through the config's own mechanism, as `secret_env` names it.
        let config = Config::from_toml_str(&toml, |name| match name {
            DEMO_SECRET_ENV => Some(secret_text.clone()),
            DEMO_S3_SECRET_ENV => Some(s3_secret_text.clone()),
            _ => None,
        })?;
        let state = Arc::new(AppState::new(&config, Arc::new(SystemClock))?);
        let verify_toml = verify_config(verify_addr, folder_addr);
        let verify_config = Config::from_toml_str(&verify_toml, |_| Some(secret_text.clone()))?;
        let verify_state = Arc::new(AppState::new(&verify_config, Arc::new(SystemClock))?);
        let admin_state = Arc::new(Admin::new(
            &config,
            Arc::clone(&state.metrics),
            Arc::clone(&state.health),
            Arc::clone(&state.clock),
        ));
        Ok(Self {
            gateway,
            cdn: cdn_addr,
            site: site_addr,
            admin: admin_addr,
            verify: verify_addr,
            folder: folder_addr,
            partner: partner_addr,
            s3: s3_addr,
            gateway_listener,
            state,
            verify_listener,
            verify_state,
            admin_listener,
            admin_state,
            secret_text,
            s3_secret_text,
            explained_picture,
        })
    }

    /// The secret access key the stand-in S3 store checks presigned URLs with (the gateway's
    /// `bucket` route has it from `SIGNGATE_DEMO_S3_SECRET`): random per run and good for this
    /// demo's bucket only, so a check of its own may use it.
    pub fn s3_secret_access_key(&self) -> &str {
        &self.s3_secret_text
    }

    /// A shell line that runs `signgate explain` on a freshly signed URL of the picture the
    /// gallery page explains, with this run's secret: ready to paste.
    pub fn explain_command(&self) -> Option<String> {
        let cdn_base = format!("http://{}", self.cdn);
        let bare = self.explained_picture.as_deref()?;
        let rest = bare.strip_prefix(&cdn_base)?.strip_prefix('/')?;
        let file = FileRef::parse(strip_api_key(rest, Some(DEMO_API_KEY))).ok()?;
        // The policy the gateway's site route writes (its default calls; ttl and bucket above).
        let policy = Policy {
            expiry: bucketed_expiry(SystemClock.now_unix(), DEMO_TTL, DEMO_BUCKET),
            call: vec![Call::Read, Call::Convert],
            handle: Some(file.handle.as_str().to_owned()),
            ..Policy::default()
        };
        let secret = Secret::new(self.secret_text.clone()).ok()?;
        let url = signed_url(
            &cdn_base,
            &file,
            None,
            &policy.sign(&secret),
            UrlStyle::Query,
        );
        Some(format!(
            "{DEMO_SECRET_ENV}={} signgate explain --secret-env {DEMO_SECRET_ENV} '{url}'",
            self.secret_text
        ))
    }

    /// Serves the gateway, its admin listener and the verify gateway until `shutdown`
    /// resolves; the admin listener and the verify gateway stop once the gateway has drained.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop_verify, verify_stopped) = tokio::sync::oneshot::channel::<()>();
        let verify = tokio::spawn(serve(self.verify_listener, self.verify_state, async {
            let _ = verify_stopped.await;
        }));
        let (drained, stop_admin) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(admin::serve(
            self.admin_listener,
            self.admin_state,
            async move {
                let _ = stop_admin.await;
            },
        ));
        let served = serve(self.gateway_listener, self.state, shutdown).await;
        let _ = drained.send(());
        let _ = stop_verify.send(());
        match verify.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "demo verify gateway failed"),
            Err(e) => tracing::warn!(error = %e, "demo verify gateway panicked"),
            Ok(Ok(())) => {}
        }
        match admin.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "demo admin listener failed"),
            Err(e) => tracing::warn!(error = %e, "demo admin listener panicked"),
            Ok(Ok(())) => {}
        }
        served
    }
}

/// The partner's server: the picture at [`PARTNER_PICTURE`], nothing else.
fn partner_answer(request: &Request<Incoming>, picture: bytes::Bytes) -> Response<ResponseBody> {
    let mut response = if request.uri().path() == PARTNER_PICTURE {
        let mut response = Response::new(crate::body::full(picture));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("image/png"),
        );
        response
    } else {
        let mut response = Response::new(crate::body::full("not found"));
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        response
    };
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn local(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartupError> {
    listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })
}

/// Where the demo's servers listen.
struct Addresses {
    gateway: SocketAddr,
    cdn: SocketAddr,
    site: SocketAddr,
    admin: SocketAddr,
    verify: SocketAddr,
    partner: SocketAddr,
    s3: SocketAddr,
}

/// The demo's gateway.toml: the gallery site (signing URLs on the CDN and on the verify
/// gateway, and presigning the bucket's objects the page writes bare), a proxy route, an
/// upload-policy route, and a redirect route presigning the bucket's objects for the access
/// key `s3_key_id`.
fn demo_config(addresses: &Addresses, s3_key_id: &str) -> String {
    let Addresses {
        gateway,
        cdn,
        site,
        admin,
        verify,
        partner,
        s3,
    } = addresses;
    let (s3_bucket, region) = (s3::DEMO_S3_BUCKET, s3::DEMO_S3_REGION);
    format!(
        r#"[server]
listen = "{gateway}"

[admin]
listen = "{admin}"

[signing]
secret_env = "{DEMO_SECRET_ENV}"
ttl = "{ttl}s"
bucket = "{bucket}s"

[[route]]
name = "images"
prefix = "/img/"
mode = "proxy"
upstream = "http://{cdn}"
calls = ["read", "convert"]

[[route]]
name = "upload"
prefix = "/upload-policy"
mode = "upload-policy"
calls = ["pick", "store"]
max_size = "{DEMO_MAX_SIZE}"
path = "^/gallery/"

[[route]]
name = "bucket"
prefix = "{DEMO_S3_ROUTE}/"
mode = "redirect"
upstream = "http://{s3}/{s3_bucket}"  # path style: the stand-in S3 store on loopback
scheme = "s3"
access_key_id = "{s3_key_id}"
region = "{region}"
secret_env = "{DEMO_S3_SECRET_ENV}"  # the secret access key

[[route]]
name = "site"
prefix = "/"
mode = "site"
upstream = "http://{site}"
rewrite_hosts = ["{cdn}", "{verify}"]
keep_http = true                # the stand-in CDN and the verify gateway speak plain http, on loopback only
api_key = "{DEMO_API_KEY}"
external_sources = ["http://{partner}/pictures/"] # the partner's folder; http written out, as it is on loopback

[[route.cdn]]                   # the bucket's objects, written bare in the page: presigned as it streams
hosts = ["{s3}"]
scheme = "s3"
access_key_id = "{s3_key_id}"
region = "{region}"
secret_env = "{DEMO_S3_SECRET_ENV}"
"#,
        ttl = DEMO_TTL.as_secs(),
        bucket = DEMO_BUCKET.as_secs(),
    )
}

/// The second gateway's config: a verify route in front of the folder, with the same secret.
fn verify_config(verify: SocketAddr, folder: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "{verify}"

[signing]
secret_env = "{DEMO_SECRET_ENV}"

[[route]]
name = "folder"
prefix = "/"
mode = "verify"
upstream = "http://{folder}"
"#
    )
}

/// Accepts connections on `listener` forever, answering each request with `handler`.
fn spawn_server<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        return String::new();
    }
    crate::secret::hex_lower(&buf)
}

/// A random 20-character handle.
pub fn random_handle() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = [0u8; 20];
    // Without randomness, handles still differ by time; the demo is not a security boundary.
    if getrandom::fill(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (nanos >> (i % 16)) as u8);
    }
    buf.iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Escapes text for HTML.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

//! The demo in a real browser (headless Chromium through chromedriver): every gallery image
//! loads signed (the S3 bucket's through the gateway's presigning redirect), the gallery's live counter runs over a WebSocket through the gateway, an upload under the limit appears, one over it is refused by the CDN even when
//! the page's script asks for more. Screenshots go to `target/browser/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test fails under CI (`CI` set) and says it skipped elsewhere.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use signgate::demo::Demo;
use signgate::demo::images::pop_art_png;
use support::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Kills chromedriver (and with it the browser) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start_driver() -> (Driver, String) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (driver, url)
}

async fn browser(driver_url: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a browser session")
}

/// Pictures in the gallery's second row, from the folder behind the verify gateway.
const PRIVATE_ROW: usize = 3;
/// Pictures in the third row, external sources on the partner's server.
const PARTNER_ROW: usize = 1;
/// Pictures in the fourth row, objects in the stand-in S3 bucket behind the gateway's redirect.
const BUCKET_ROW: usize = 2;
/// All the gallery's pictures before an upload.
const PICTURES: usize = 6 + PRIVATE_ROW + PARTNER_ROW + BUCKET_ROW;

/// Whether `src`, as the browser reports a loaded picture's, is signed: Filestack's credentials
/// (`signature=`, or `,s:` in the task form), an S3 presigned URL, or a path on the gateway's
/// bucket route. That route answers nothing but a 307 to a presigned URL and the bucket serves
/// nothing else, so a picture from it that loaded was fetched presigned.
fn signed(src: &str, gateway: &str) -> bool {
    src.contains("signature=")
        || src.contains(",s:")
        || src.contains("X-Amz-Signature=")
        || src.starts_with(&format!("{gateway}{}/", signgate::demo::DEMO_S3_ROUTE))
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser");
    std::fs::create_dir_all(&dir).expect("target/browser");
    dir
}

/// Waits until every image on the page has loaded or failed; returns `[{src, width}]`.
async fn loaded_images(client: &Client) -> Vec<(String, u64)> {
    const JS: &str = r#"
        const done = arguments[arguments.length - 1];
        const images = Array.from(document.images);
        Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })))
          .then(() => done(images.map(i => [i.currentSrc || i.src, i.naturalWidth])));
    "#;
    let value = client.execute_async(JS, vec![]).await.expect("script runs");
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("src").to_owned(),
                pair[1].as_u64().expect("width"),
            )
        })
        .collect()
}

async fn wait_for_text(client: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            let text = element.text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said {needle:?}; last: {text:?}"
            );
        }
        assert!(Instant::now() < deadline, "{css} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    let element = client.find(Locator::Css(css)).await.expect(css);
    element.text().await.expect("text")
}

async fn upload(client: &Client, gateway: &str, file: &Path, caption: &str) {
    client
        .goto(&format!("{gateway}/upload"))
        .await
        .expect("upload page");
    let input = client
        .find(Locator::Css("#file"))
        .await
        .expect("file input");
    input
        .send_keys(&file.display().to_string())
        .await
        .expect("file chosen");
    let text = client
        .find(Locator::Css("#caption"))
        .await
        .expect("caption input");
    text.send_keys(caption).await.expect("caption typed");
    client
        .find(Locator::Css("#send"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_works_in_a_real_browser() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium/chromedriver missing under CI: .ci/run must install them"
        );
        eprintln!("SKIPPED: install chromium and chromium-driver to run the browser test");
        return;
    }
    let demo = Demo::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo starts");
    let gateway = format!("http://{}", demo.gateway);
    let cdn = format!("http://{}", demo.cdn);
    let site = format!("http://{}", demo.site);
    let verify = format!("http://{}", demo.verify);
    let bucket = format!("http://{}", demo.s3);
    tokio::spawn(demo.serve(std::future::pending()));
    let (_driver, driver_url) = start_driver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let client = browser(&driver_url, profile.path()).await;
    let shots = screenshot_dir();

    // A guard against hangs, not a timing check: on two loaded cores the steps take about 100 s.
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        // 1. Every gallery image loads, signed; the same URL bare is refused by the CDN.
        client.goto(&format!("{gateway}/")).await.expect("gallery");
        let images = loaded_images(&client).await;
        assert_eq!(images.len(), PICTURES, "{images:?}");
        for (i, (src, width)) in images.iter().enumerate() {
            // The CDN's six, the folder's through the verify gateway, the partner's picture, an
            // external source the CDN transforms (`security=p:…,s:…`), then the bucket's: the
            // first presigned in the page, the second on the gateway's redirect route (the
            // `src` the browser keeps) or, should it report where the redirect led, presigned.
            let bucket_row = 6 + PRIVATE_ROW + PARTNER_ROW;
            let ok = if i >= bucket_row {
                let presigned = src.starts_with(&format!("{bucket}/")) && src.contains("X-Amz-Signature=");
                let route = src.starts_with(&format!("{gateway}{}/", signgate::demo::DEMO_S3_ROUTE));
                presigned || route
            } else {
                let origin = if (6..6 + PRIVATE_ROW).contains(&i) { &verify } else { &cdn };
                src.starts_with(origin) && signed(src, &gateway)
            };
            assert!(ok, "{src}");
            assert_eq!(*width, 300, "{src} did not load at its thumbnail width");
        }
        // Chromium reports the bucket's pictures at the route; the route leads to presigned URLs.
        for (src, _) in images.iter().skip(6 + PRIVATE_ROW + PARTNER_ROW) {
            if src.starts_with(&gateway) {
                let redirect = get(src).await;
                assert_eq!(redirect.status, http::StatusCode::TEMPORARY_REDIRECT, "{src}");
                let location = redirect.headers["location"].to_str().expect("ascii");
                assert!(
                    location.starts_with(&format!("{bucket}/")) && location.contains("X-Amz-Signature="),
                    "{src} -> {location}"
                );
            }
        }
        std::fs::write(shots.join("gallery.png"), client.screenshot().await.expect("screenshot"))
            .expect("saved");
        // 1a. The live counter: the page's WebSocket to the site passes through the gateway,
        // and a second viewer connecting (and going) is pushed to the page.
        wait_for_text(&client, "#live-count", "1").await;
        let live = format!("{}/live", gateway.replacen("http://", "ws://", 1));
        let (mut viewer, _) = tokio_tungstenite::connect_async(&live)
            .await
            .expect("a second viewer connects through the gateway");
        wait_for_text(&client, "#live-count", "2").await;
        viewer.close(None).await.expect("the viewer leaves");
        wait_for_text(&client, "#live-count", "1").await;

        let bare = images[0].0.split('?').next().expect("bare").to_owned();
        let refused = get(&bare).await;
        assert_eq!(refused.status, http::StatusCode::FORBIDDEN);
        assert!(refused.text().contains("policy error"), "{}", refused.text());

        // 1b. The first picture explained: as the site wrote it, as the browser received it,
        // and its policy decoded, with a real expiry; then the same page without the gateway.
        assert_eq!(text_of(&client, "#bare-url").await, bare);
        assert_eq!(text_of(&client, "#received-url").await, images[0].0);
        let decoded = text_of(&client, "#decoded-policy").await;
        let policy: Value = serde_json::from_str(&decoded).expect("the panel shows JSON");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let expiry = policy["expiry"].as_u64().expect("a numeric expiry");
        assert!(
            (now + 3600 - 5..=now + 3600 + 300).contains(&expiry),
            "expiry {expiry} is not now + ttl rounded to the bucket: {decoded}"
        );
        assert_eq!(policy["call"], json!(["read", "convert"]), "{decoded}");
        assert_eq!(policy["handle"].as_str(), bare.rsplit('/').next(), "{decoded}");
        assert!(text_of(&client, "#policy-expiry").await.starts_with("Expires 2"));

        let link = client.find(Locator::Css("#without-gateway")).await.expect("the link");
        assert_eq!(link.attr("href").await.expect("href"), Some(format!("{site}/")));
        client.goto(&format!("{site}/")).await.expect("the site, without the gateway");
        let broken = loaded_images(&client).await;
        assert_eq!(broken.len(), PICTURES, "{broken:?}");
        assert!(broken.iter().all(|(src, width)| *width == 0 && !src.contains("signature")), "{broken:?}");
        assert!(text_of(&client, "#decoded-policy").await.starts_with("none"));
        std::fs::write(shots.join("without-gateway.png"), client.screenshot().await.expect("screenshot"))
            .expect("saved");

        // 2. An upload under the limit appears in the gallery.
        let dir = tempfile::tempdir().expect("temp dir");
        let small = dir.path().join("warhol.png");
        std::fs::write(&small, pop_art_png(360, [[255, 0, 128], [0, 200, 255], [255, 230, 0], [20, 20, 20]], [[255; 3]; 4]))
            .expect("picture written");
        upload(&client, &gateway, &small, "Uploaded in the test").await;
        wait_for_text(&client, "main", "Uploaded in the test").await;
        let images = loaded_images(&client).await;
        assert_eq!(images.len(), PICTURES + 1);
        assert!(
            images.iter().all(|(src, width)| *width > 0 && signed(src, &gateway)),
            "{images:?}"
        );
        std::fs::write(shots.join("after-upload.png"), client.screenshot().await.expect("screenshot"))
            .expect("saved");

        // 3. One over the limit is refused by the CDN.
        let big = dir.path().join("too-big.png");
        std::fs::write(&big, vec![7u8; 1_500_000]).expect("big file written");
        upload(&client, &gateway, &big, "Too big").await;
        let status = wait_for_text(&client, "#status", "Refused by the CDN").await;
        assert!(status.contains("exceeds maxSize 1000000"), "{status}");
        std::fs::write(shots.join("refused.png"), client.screenshot().await.expect("screenshot"))
            .expect("saved");

        // 4. ...even when the page's script asks the gateway for more, or widens the policy itself.
        const TAMPER: &str = r#"
            const done = arguments[arguments.length - 1];
            (async () => {
              const cdn = document.getElementById('upload').dataset.cdn;
              const grant = await (await fetch('/upload-policy?maxSize=100000000&max_size=100MB')).json();
              const fields = JSON.parse(atob(grant.policy.replace(/-/g, '+').replace(/_/g, '/')));
              const granted = fields.maxSize;
              fields.maxSize = 100000000;
              const widened = btoa(JSON.stringify(fields)).replace(/\+/g, '-').replace(/\//g, '_');
              const big = new Blob([new Uint8Array(1500000)], { type: 'image/png' });
              const post = async (policy) => {
                const q = new URLSearchParams({ policy, signature: grant.signature, path: '/gallery/', filename: 'big.png' });
                const r = await fetch(cdn + '/api/store/S3?' + q, { method: 'POST', body: big, headers: { 'content-type': 'image/png' } });
                return [r.status, await r.text()];
              };
              done({ granted, asked: await post(grant.policy), widened: await post(widened) });
            })().catch(e => done({ error: String(e) }));
        "#;
        let result: Value = client.execute_async(TAMPER, vec![]).await.expect("script runs");
        assert!(result.get("error").is_none(), "{result}");
        assert_eq!(result["granted"], 1_000_000, "the gateway widened the policy: {result}");
        assert_eq!(result["asked"][0], 403, "{result}");
        assert_eq!(result["widened"][0], 403, "{result}");
        assert!(result["widened"][1].as_str().unwrap_or_default().contains("bad signature"), "{result}");

        client.goto(&format!("{gateway}/")).await.expect("gallery");
        assert_eq!(loaded_images(&client).await.len(), PICTURES + 1, "a refused upload reached the gallery");
    })
    .await;
    let _ = client.close().await;
    outcome.expect("the browser test finished within 180 s");
}

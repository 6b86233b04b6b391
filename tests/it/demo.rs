//! The embedded demo over HTTP: the gallery comes out signed through the gateway, the stand-in
//! CDN refuses what the real one would, and uploads are held to the gateway's policy.

use crate::support;

use bytes::Bytes;
use http::{Method, StatusCode};
use signgate::demo::Demo;
use signgate::demo::images::png_size;
use support::s3::check_presigned;
use support::*;

async fn demo() -> (Demo, std::net::SocketAddr, std::net::SocketAddr) {
    let demo = Demo::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo starts");
    let (gateway, cdn) = (demo.gateway, demo.cdn);
    (demo, gateway, cdn)
}

/// A bare URL's answer, as the CDN words it (the stand-in CDN, or the verify gateway).
fn assert_refused_bare(refused: &Answer) {
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .contains("policy error: proper credentials were not provided"),
        "{}",
        refused.text()
    );
}

/// Pictures in the gallery's second row, from the folder behind the verify gateway.
const PRIVATE_ROW: usize = 3;
/// Pictures in the third row, external sources on the partner's server.
const PARTNER_ROW: usize = 1;
/// Pictures in the fourth row, objects in the stand-in S3 bucket behind the gateway's redirect.
const BUCKET_ROW: usize = 2;

fn image_urls(html: &str) -> Vec<String> {
    html.split("<img src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|url| url.replace("&amp;", "&"))
        .collect()
}

#[tokio::test]
async fn the_gallery_is_signed_through_the_gateway_and_bare_urls_are_refused() {
    let (demo, gateway, cdn) = demo().await;
    let site = demo.site;
    tokio::spawn(demo.serve(std::future::pending()));

    // The site itself renders bare URLs.
    let bare_page = get(&format!("http://{site}/")).await.text();
    let bare = image_urls(&bare_page);
    assert_eq!(bare.len(), 6 + PRIVATE_ROW + PARTNER_ROW + BUCKET_ROW);
    assert!(bare.iter().all(|u| !u.contains("signature")));

    let page = get(&format!("http://{gateway}/")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let urls = image_urls(&html);
    assert_eq!(urls.len(), 6 + PRIVATE_ROW + PARTNER_ROW + BUCKET_ROW);

    // The first picture is explained: its bare URL stays bare in the page source through the
    // gateway (element text, which the rewriter leaves alone), the script reads the signed one
    // from the picture, and a link leads to the same page without the gateway.
    assert!(
        html.contains(&format!(r#"<code id="bare-url">{}</code>"#, bare[0])),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            r#"<a id="without-gateway" href="http://{site}/">"#
        )),
        "{html}"
    );
    let first_img = html.split("<img ").nth(1).expect("an image");
    assert!(
        first_img.contains(r#"id="explained-picture""#) && first_img.contains("signature="),
        "{first_img}"
    );
    assert!(html.contains("getElementById('explained-picture')"));
    for url in urls.iter().take(6) {
        assert!(
            url.starts_with(&format!(
                "http://{cdn}/{}/resize=width:300/",
                signgate::demo::DEMO_API_KEY
            )) && url.contains("signature="),
            "{url}"
        );
        let image = get(url).await;
        assert_eq!(image.status, StatusCode::OK, "{url}: {}", image.text());
        assert_eq!(image.headers["content-type"], "image/png");
        assert_eq!(
            png_size(&image.body),
            Some((300, 300)),
            "resize=width:300 applied"
        );
    }
    let refused = get(&bare[0]).await;
    assert_refused_bare(&refused);

    // The proxy route serves the same files with credentials added by the gateway.
    let handle = bare[0].rsplit('/').next().expect("handle");
    let proxied = get(&format!("http://{gateway}/img/{handle}")).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(png_size(&proxied.body), Some((480, 480)));
}

#[tokio::test]
async fn the_folder_row_is_signed_by_the_gateway_and_checked_by_the_verify_gateway() {
    let (demo, gateway, _) = demo().await;
    let (site, verify, folder) = (demo.site, demo.verify, demo.folder);
    tokio::spawn(demo.serve(std::future::pending()));

    let bare: Vec<String> = image_urls(&get(&format!("http://{site}/")).await.text())
        .into_iter()
        .skip(6)
        .take(PRIVATE_ROW)
        .collect();
    let signed: Vec<String> = image_urls(&get(&format!("http://{gateway}/")).await.text())
        .into_iter()
        .skip(6)
        .take(PRIVATE_ROW)
        .collect();
    assert_eq!(bare.len(), PRIVATE_ROW);
    for (bare, signed) in bare.iter().zip(&signed) {
        assert!(bare.starts_with(&format!("http://{verify}/")), "{bare}");
        assert!(
            signed.starts_with(&format!("{bare}?policy=")) && signed.contains("&signature="),
            "{signed}"
        );
        let image = get(signed).await;
        assert_eq!(image.status, StatusCode::OK, "{signed}: {}", image.text());
        assert_eq!(image.headers["content-type"], "image/png");
        assert_eq!(png_size(&image.body), Some((300, 300)));
        // Bare, the verify gateway refuses it as the CDN would; the folder's own server, which
        // checks nothing, serves it to whoever reaches it (loopback only).
        let refused = get(bare).await;
        assert_refused_bare(&refused);
        let handle = bare.rsplit('/').next().expect("handle");
        let direct = get(&format!("http://{folder}/{handle}")).await;
        assert_eq!(direct.body, image.body);
    }
    // A URL signed for one picture of the row does not open another.
    let other = bare[1].rsplit('/').next().expect("handle");
    let query = signed[0].split_once('?').expect("query").1;
    let swapped = get(&format!("http://{verify}/{other}?{query}")).await;
    assert_eq!(swapped.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn uploads_are_held_to_the_policy_the_gateway_signs() {
    let (demo, gateway, cdn) = demo().await;
    tokio::spawn(demo.serve(std::future::pending()));
    let grant: serde_json::Value = serde_json::from_slice(
        &get(&format!("http://{gateway}/upload-policy?maxSize=99999999"))
            .await
            .body,
    )
    .expect("json");
    let policy = grant["policy"].as_str().expect("policy");
    let signature = grant["signature"].as_str().expect("signature");
    let store = |policy: &str| {
        format!(
            "http://{cdn}/api/store/S3?policy={}&signature={signature}&path=%2Fgallery%2F&filename=a.png",
            policy.replace('=', "%3D")
        )
    };

    let small = Bytes::from(vec![1u8; 10_000]);
    let stored = send_body(
        Method::POST,
        &store(policy),
        &[("content-type", "image/png")],
        small.clone(),
    )
    .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    let json: serde_json::Value = serde_json::from_slice(&stored.body).expect("json");
    let url = json["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("http://{cdn}/")) && !url.contains("signature"));
    assert_eq!(json["size"], 10_000);

    // The site accepts it and the gallery shows it, signed.
    let added = send_body(
        Method::POST,
        &format!("http://{gateway}/photos"),
        &[("content-type", "application/json")],
        serde_json::json!({"url": url, "caption": "Mine"}).to_string(),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED);
    let page = get(&format!("http://{gateway}/")).await.text();
    assert!(page.contains("<figcaption>Mine</figcaption>"));
    assert_eq!(
        image_urls(&page).len(),
        7 + PRIVATE_ROW + PARTNER_ROW + BUCKET_ROW
    );

    let big = Bytes::from(vec![1u8; 1_000_001]);
    let refused = send_body(Method::POST, &store(policy), &[], big.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("exceeds maxSize 1000000"),
        "{}",
        refused.text()
    );

    // Widening the policy in the browser breaks its signature.
    let mut decoded = signgate::policy::DecodedPolicy::decode(policy)
        .expect("decodes")
        .json;
    decoded = decoded.replace("\"maxSize\":1000000", "\"maxSize\":100000000");
    use base64::Engine;
    let widened = base64::engine::general_purpose::URL_SAFE.encode(decoded);
    let tampered = send_body(Method::POST, &store(&widened), &[], big).await;
    assert_eq!(tampered.status, StatusCode::FORBIDDEN);
    assert!(
        tampered.text().contains("bad signature"),
        "{}",
        tampered.text()
    );

    // A path outside the policy's is refused too.
    let elsewhere = store(policy).replace("%2Fgallery%2F", "%2Fadmin%2F");
    let refused = send_body(Method::POST, &elsewhere, &[], small).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

/// Kills the demo process however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_prints_an_explain_line_that_checks_its_url_with_this_runs_secret() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_signgate"));
    let mut demo = Running(
        Command::new(binary)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the demo starts"),
    );
    // Read on a thread, so a demo that never prints the line fails the test instead of hanging it.
    let stdout = BufReader::new(demo.0.stdout.take().expect("stdout"));
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let line = loop {
        match printed.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) if line.contains("signgate explain") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no explain line in {seen:#?}"),
        }
    };
    let line = line.trim();
    assert!(
        line.starts_with("SIGNGATE_DEMO_SECRET=")
            && line.contains(" signgate explain --secret-env SIGNGATE_DEMO_SECRET 'http://"),
        "{line}"
    );

    // Pasted into a shell as printed, with the binary on the PATH.
    let path = format!(
        "{}:{}",
        binary.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", line])
        .env("PATH", path)
        .output()
        .expect("sh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("valid:         yes, for the secret in SIGNGATE_DEMO_SECRET"),
        "{text}"
    );
    assert!(text.contains("calls needed:  read, convert"), "{text}");

    // And the URL is one the running demo's CDN serves.
    let url = line.split('\'').nth(1).expect("a quoted URL");
    let image = get(url).await;
    assert_eq!(image.status, StatusCode::OK, "{url}: {}", image.text());
    assert_eq!(png_size(&image.body), Some((300, 300)));
}

#[tokio::test]
async fn the_partner_row_is_an_external_source_the_cdn_fetches_only_signed() {
    use signgate::demo::DEMO_API_KEY;
    let (demo, gateway, cdn) = demo().await;
    let (site, partner) = (demo.site, demo.partner);
    tokio::spawn(demo.serve(std::future::pending()));
    let source = format!("http://{partner}/pictures/partner.png");

    let bare = image_urls(&get(&format!("http://{site}/")).await.text());
    let bare = bare.get(6 + PRIVATE_ROW).expect("the partner's picture");
    assert_eq!(
        bare,
        &format!("http://{cdn}/{DEMO_API_KEY}/resize=width:300/{source}")
    );
    assert_refused_bare(&get(bare).await);

    let signed = image_urls(&get(&format!("http://{gateway}/")).await.text());
    let signed = signed.get(6 + PRIVATE_ROW).expect("the partner's picture");
    assert!(
        signed.starts_with(&format!(
            "http://{cdn}/{DEMO_API_KEY}/resize=width:300/security=p:"
        )) && signed.ends_with(&format!("/{source}")),
        "{signed}"
    );
    let image = get(signed).await;
    assert_eq!(image.status, StatusCode::OK, "{signed}: {}", image.text());
    assert_eq!(
        png_size(&image.body),
        Some((300, 300)),
        "fetched and resized"
    );
    // The credentials are for that one source: moved to another, the CDN refuses them.
    let moved = signed.replace("partner.png", "other.png");
    assert_eq!(get(&moved).await.status, StatusCode::FORBIDDEN);
    // The handles of the first row are written after the API key too, and still signed.
    assert!(
        image_urls(&get(&format!("http://{site}/")).await.text())[0]
            .starts_with(&format!("http://{cdn}/{DEMO_API_KEY}/resize=width:300/"))
    );
}

#[tokio::test]
async fn the_bucket_row_is_presigned_in_the_page_and_through_a_redirect_route() {
    use signgate::demo::DEMO_S3_ROUTE;
    use signgate::demo::s3::DEMO_S3_BUCKET;
    let (demo, gateway, _) = demo().await;
    let (site, s3) = (demo.site, demo.s3);
    let secret = demo.s3_secret_access_key().to_owned();
    tokio::spawn(demo.serve(std::future::pending()));
    let row = 6 + PRIVATE_ROW + PARTNER_ROW;
    let bucket = format!("http://{s3}/{DEMO_S3_BUCKET}");

    // The site writes the first object's bare URL and a path on the gateway's redirect route
    // for the second; the site route presigns the first ([[route.cdn]]) and leaves the path.
    let bare: Vec<String> = image_urls(&get(&format!("http://{site}/")).await.text())
        .into_iter()
        .skip(row)
        .collect();
    let page = get(&format!("http://{gateway}/")).await.text();
    assert!(page.contains("From an S3-compatible bucket"), "{page}");
    let through: Vec<String> = image_urls(&page).into_iter().skip(row).collect();
    assert_eq!(bare.len(), BUCKET_ROW, "{bare:?}");
    assert_eq!(through.len(), BUCKET_ROW, "{through:?}");
    let in_page_key = bare[0]
        .strip_prefix(&format!("{bucket}/"))
        .unwrap_or_else(|| panic!("{} is not the bucket's bare URL", bare[0]));
    let route_key = bare[1]
        .strip_prefix(&format!("{DEMO_S3_ROUTE}/"))
        .unwrap_or_else(|| panic!("{} is not on the gateway's bucket route", bare[1]));
    assert_eq!(through[1], bare[1]);
    assert!(
        through[0].starts_with(&format!("{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&", bare[0])),
        "{}",
        through[0]
    );

    // Through the gateway's redirect route: 307 to the object's URL, presigned.
    let redirect = get(&format!("http://{gateway}{}", bare[1])).await;
    assert_eq!(
        redirect.status,
        StatusCode::TEMPORARY_REDIRECT,
        "{}",
        bare[1]
    );
    let redirected = redirect.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let mut presigned = Vec::new();
    for (key, location) in [(in_page_key, through[0].clone()), (route_key, redirected)] {
        let object = format!("{bucket}/{key}");
        // Bare, the bucket refuses the object, as S3 refuses a private one.
        let refused = get(&object).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{object}");
        assert!(
            refused.text().contains("<Code>AccessDenied</Code>"),
            "{}",
            refused.text()
        );
        assert!(
            location.starts_with(&format!("{object}?X-Amz-Algorithm=AWS4-HMAC-SHA256&")),
            "{location}"
        );
        // A second reading of SigV4 accepts it for this run's secret access key...
        let (host, target) = location
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| rest.split_at(i)))
            .expect("host and path");
        check_presigned("GET", host, target, &http::HeaderMap::new(), &secret, now())
            .unwrap_or_else(|why| panic!("{location}: {why}"));
        // ...and the bucket serves it: the picture, at the thumbnail width.
        let image = get(&location).await;
        assert_eq!(image.status, StatusCode::OK, "{location}: {}", image.text());
        assert_eq!(image.headers["content-type"], "image/png");
        assert_eq!(png_size(&image.body), Some((300, 300)));
        presigned.push((key.to_owned(), location));
    }

    // Tampered, it is refused: another object under these credentials, or a longer validity.
    let ((key, first), (other, _)) = (&presigned[0], &presigned[1]);
    let moved = first.replacen(key.as_str(), other, 1);
    let refused = get(&moved).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{moved}");
    assert!(
        refused.text().contains("SignatureDoesNotMatch"),
        "{}",
        refused.text()
    );
    let longer = first.replace("X-Amz-Expires=", "X-Amz-Expires=1");
    assert_ne!(&longer, first);
    assert_eq!(get(&longer).await.status, StatusCode::FORBIDDEN, "{longer}");
}

//! The embedded demo over HTTP: the gallery comes out signed through the gateway, the stand-in
//! CDN refuses what the real one would, and uploads are held to the gateway's policy.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use signgate::demo::Demo;
use signgate::demo::images::png_size;
use support::*;

async fn demo() -> (Demo, std::net::SocketAddr, std::net::SocketAddr) {
    let demo = Demo::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo starts");
    let (gateway, cdn) = (demo.gateway, demo.cdn);
    (demo, gateway, cdn)
}

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
    assert_eq!(bare.len(), 6);
    assert!(bare.iter().all(|u| !u.contains("signature")));

    let page = get(&format!("http://{gateway}/")).await;
    assert_eq!(page.status, StatusCode::OK);
    let urls = image_urls(&page.text());
    assert_eq!(urls.len(), 6);
    for url in &urls {
        assert!(
            url.starts_with(&format!("http://{cdn}/resize=width:300/"))
                && url.contains("signature="),
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
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .contains("policy error: proper credentials were not provided"),
        "{}",
        refused.text()
    );

    // The proxy route serves the same files with credentials added by the gateway.
    let handle = bare[0].rsplit('/').next().expect("handle");
    let proxied = get(&format!("http://{gateway}/img/{handle}")).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(png_size(&proxied.body), Some((480, 480)));
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
    assert_eq!(image_urls(&page).len(), 7);

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

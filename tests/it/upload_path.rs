//! An upload policy's `path` is a regular expression the CDN matches anywhere in the upload's
//! path: the stand-in CDN reads it so, and `signgate check` wants it anchored.

use crate::support;

use std::io::Write;
use std::process::{Command, Output};

use http::{Method, StatusCode};
use support::*;

/// Asks `gateway`'s upload-policy route at `prefix` for a policy, then uploads to the CDN
/// under `path` with it; returns the CDN's answer.
async fn upload(gateway: &TestGateway, prefix: &str, cdn: &TestCdn, path: &str) -> Answer {
    let grant: serde_json::Value =
        serde_json::from_slice(&get(&gateway.url(prefix)).await.body).expect("json");
    let policy = grant["policy"].as_str().expect("policy");
    let signature = grant["signature"].as_str().expect("signature");
    let url = format!(
        "{}/api/store/S3?policy={}&signature={signature}&path={}&filename=a.png",
        cdn.url(),
        policy.replace('=', "%3D"),
        path.replace('/', "%2F")
    );
    send_body(
        Method::POST,
        &url,
        &[("content-type", "image/png")],
        &b"picture"[..],
    )
    .await
}

#[tokio::test]
async fn the_stand_in_cdn_matches_the_upload_path_as_a_regular_expression() {
    let cdn = TestCdn::builder().start().await;
    let gateway = TestGateway::start(&format!(
        "{SIGNING}\
         [[route]]\nname = \"anchored\"\nprefix = \"/anchored\"\nmode = \"upload-policy\"\npath = \"^/gallery/\"\n\
         [[route]]\nname = \"loose\"\nprefix = \"/loose\"\nmode = \"upload-policy\"\npath = \"/gallery/\"\n\
         [[route]]\nname = \"pattern\"\nprefix = \"/pattern\"\nmode = \"upload-policy\"\npath = \"^/gallery/[a-z]+\\\\.png$\"\n"
    ))
    .await;
    let cases = [
        ("/anchored", "/gallery/cat.png", StatusCode::OK),
        (
            "/anchored",
            "/private/gallery/cat.png",
            StatusCode::FORBIDDEN,
        ),
        ("/anchored", "/gallery", StatusCode::FORBIDDEN),
        // Unanchored, as the real CDN reads it: a match anywhere in the path will do.
        ("/loose", "/gallery/cat.png", StatusCode::OK),
        ("/loose", "/private/gallery/cat.png", StatusCode::OK),
        ("/pattern", "/gallery/cat.png", StatusCode::OK),
        ("/pattern", "/gallery/cat.png.exe", StatusCode::FORBIDDEN),
        ("/pattern", "/gallery/Cat.png", StatusCode::FORBIDDEN),
    ];
    for (prefix, path, status) in cases {
        let answer = upload(&gateway, prefix, &cdn, path).await;
        assert_eq!(answer.status, status, "{prefix} {path}: {}", answer.text());
        if status == StatusCode::OK {
            let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
            assert_eq!(json["path"], path);
        } else {
            assert!(
                answer.text().contains("is not allowed"),
                "{}",
                answer.text()
            );
        }
    }
}

fn check(strict: bool, limits: &str) -> Output {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "{SIGNING}[[route]]\nname = \"upload\"\nprefix = \"/up\"\nmode = \"upload-policy\"\n{limits}\n"
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8");
    let mut args = vec!["check", "--config", path];
    if strict {
        args.push("--strict");
    }
    Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(&args)
        .env("SECRET", SECRET)
        .output()
        .expect("the binary runs")
}

#[test]
fn check_warns_about_an_unanchored_path_or_container_and_strict_refuses_it() {
    let cases = [
        (
            "path = \"/gallery/\"",
            "route `upload`: `path`: \"/gallery/\" is a regular expression the CDN matches anywhere in an upload's path; anchor it: \"^/gallery/\"",
        ),
        (
            "path = \"^/gallery\"",
            "route `upload`: `path`: \"^/gallery\" is a regular expression the CDN matches on longer paths too; anchor it: \"^/gallery/\" for a folder or \"^/gallery$\" for one path",
        ),
        (
            "container = \"photos\"",
            "route `upload`: `container`: \"photos\" is a regular expression the CDN matches anywhere in a container's name; anchor it: \"^photos$\"",
        ),
    ];
    for (limits, warning) in cases {
        let out = check(false, limits);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{limits}: {stderr}");
        assert!(
            stderr.contains(&format!("signgate: warning: {warning}")),
            "{stderr}"
        );
        let out = check(true, limits);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{limits}: {stderr}");
        assert!(stderr.contains(warning), "{stderr}");
        assert!(stderr.contains("refused under --strict"), "{stderr}");
    }
    for anchored in [
        "path = \"^/gallery/\"",
        "path = \"^/gallery/cat\\\\.png$\"",
        "container = \"^photos$\"",
    ] {
        for strict in [false, true] {
            let out = check(strict, anchored);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{anchored}: {stderr}");
            assert!(!stderr.contains("warning"), "{anchored}: {stderr}");
        }
    }
}

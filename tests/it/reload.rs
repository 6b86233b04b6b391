//! Hot reload, on the real binary over real sockets: SIGHUP and `signgate reload` re-read
//! `gateway.toml`, a bad file or a change that needs a restart is refused and counted while the
//! old config serves on, a download in flight finishes on the config it started with, and a
//! route whose signing did not change keeps its cache.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::support::process::{GatewayProcess, http_get, location};
use crate::support::{FileBody, Gate, H, SIGNING, TestCdn, client, get_request};

/// `[server]` and `[admin]` of every test gateway: one worker (one credential cache, so cache
/// counts are exact), ports of its own.
const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n";
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A redirect route `go` on `/go/` pointing at `upstream`.
fn redirect_route(upstream: &str) -> String {
    format!(
        "[[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\nupstream = \"{upstream}\"\n"
    )
}

const UPLOAD_ROUTE: &str =
    "[[route]]\nname = \"up\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n";

/// A whole config file: `server`, the admin listener, signing, then `rest`.
fn config(server: &str, rest: &str) -> String {
    format!("{server}{ADMIN}{SIGNING}{rest}")
}

#[test]
fn sighup_reloads_and_never_ends_the_process() {
    let mut gateway = GatewayProcess::start(&config(SERVER, UPLOAD_ROUTE));
    // Caught from the moment the address is announced, like SIGINT and SIGTERM.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gateway.child.id())).expect("status");
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).expect("hex"))
        .expect("a SigCgt line");
    assert_ne!(caught & 1, 0, "SIGHUP not caught: {caught:x}");
    assert!(http_get(&gateway.admin, "/").contains("<td>never</td>"));

    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 1.0);
    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 2.0);
    assert!(gateway.is_running());
    assert!(gateway.get("/upload-policy").starts_with("HTTP/1.1 200"));
    let status_page = http_get(&gateway.admin, "/");
    assert!(status_page.contains("Z, success</td>"), "{status_page}");
    gateway.wait_for_log("config reloaded");
    assert_eq!(gateway.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_new_requests_while_a_download_in_flight_finishes_on_the_old_config() {
    let gate = Gate::new();
    let (first, second) = (
        Bytes::from(vec![b'a'; 64 * 1024]),
        Bytes::from(vec![b'b'; 4096]),
    );
    let old_cdn = TestCdn::builder()
        .body(
            H,
            FileBody::Gated {
                first: first.clone(),
                second: second.clone(),
                gate: Arc::clone(&gate),
            },
        )
        .start()
        .await;
    let new_cdn = TestCdn::builder()
        .file(H, &b"from the new upstream"[..])
        .start()
        .await;
    let route = |cdn: &TestCdn| {
        format!(
            "[[route]]\nname = \"files\"\nprefix = \"/f/\"\nmode = \"proxy\"\nupstream = \"{}\"\n",
            cdn.url()
        )
    };
    let gateway = tokio::task::spawn_blocking({
        let route = route(&old_cdn);
        move || GatewayProcess::start(&config(SERVER, &route))
    })
    .await
    .expect("starts");
    let url = format!("http://{}/f/{H}", gateway.addr);
    let gateway = Arc::new(gateway);

    tokio::time::timeout(Duration::from_secs(20), async {
        let response = client().request(get_request(&url)).await.expect("answer");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        while received.len() < first.len() {
            let frame = body.frame().await.expect("a frame").expect("no error");
            received.extend_from_slice(&frame.into_data().expect("data"));
        }

        // The route now points at the other CDN; the download above is still open.
        let reloading = Arc::clone(&gateway);
        let new_route = route(&new_cdn);
        tokio::task::spawn_blocking(move || {
            reloading.rewrite(&config(SERVER, &new_route));
            reloading.signal("-HUP");
            reloading.wait_for_reloads("success", 1.0);
        })
        .await
        .expect("reloaded");
        let answer = client().request(get_request(&url)).await.expect("answer");
        let fresh = answer.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&fresh[..], b"from the new upstream");

        gate.open();
        while let Some(frame) = body.frame().await {
            received.extend_from_slice(&frame.expect("no error").into_data().expect("data"));
        }
        let mut expected = first.to_vec();
        expected.extend_from_slice(&second);
        assert!(received == expected, "the old download arrived whole");
    })
    .await
    .expect("within 20 s");
    assert_eq!(old_cdn.received().len(), 1);
    assert_eq!(new_cdn.received().len(), 1);
}

#[test]
fn a_bad_file_is_refused_counted_and_the_old_config_serves_on() {
    let gateway = GatewayProcess::start(&config(
        SERVER,
        &redirect_route("https://cdn.filestackcontent.com"),
    ));
    let before = gateway.get(&format!("/go/{H}"));
    assert!(before.starts_with("HTTP/1.1 307"), "{before}");

    // A bad value (and a good change beside it, which must not apply either).
    gateway.rewrite(&config(
        SERVER,
        &format!(
            "{}{UPLOAD_ROUTE}[[route]]\nname = \"x\"\nprefix = \"/x/\"\nmode = \"redirect\"\n\
             upstream = \"https://cdn.example\"\nttl = \"soon\"\n",
            redirect_route("https://other.example")
        ),
    ));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("failure", 1.0);
    gateway.wait_for_log("route `x`: `ttl`");
    let log = gateway.log();
    assert!(
        log.contains("ERROR") && log.contains("route `x`: `ttl`") && log.contains("refused"),
        "{log}"
    );
    // A secret that is not there.
    std::fs::write(
        gateway.config_path(),
        format!(
            "{SERVER}{ADMIN}[signing]\nsecret_env = \"SIGNGATE_RELOAD_UNSET\"\n{}",
            redirect_route("https://other.example")
        ),
    )
    .expect("write");
    gateway.signal("-HUP");
    gateway.wait_for_reloads("failure", 2.0);
    gateway.wait_for_log("SIGNGATE_RELOAD_UNSET");

    assert_eq!(
        gateway.metric("signgate_config_reloads_total{outcome=\"success\"}"),
        0.0
    );
    let after = gateway.get(&format!("/go/{H}"));
    assert!(
        location(&after).starts_with("https://cdn.filestackcontent.com/"),
        "{after}"
    );
    assert!(gateway.get("/upload-policy").starts_with("HTTP/1.1 404"));
    let status_page = http_get(&gateway.admin, "/");
    assert!(status_page.contains("Z, failure"), "{status_page}");
}

#[test]
fn a_changed_listen_address_is_refused_as_needing_a_restart() {
    let gateway = GatewayProcess::start(&config(SERVER, UPLOAD_ROUTE));
    gateway.rewrite(&config(
        &SERVER.replace("127.0.0.1:0", "127.0.0.1:1"),
        &format!("{UPLOAD_ROUTE}{}", redirect_route("https://cdn.example")),
    ));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("failure", 1.0);
    gateway.wait_for_log("`server.listen` changed from 127.0.0.1:0 to 127.0.0.1:1");
    gateway.wait_for_log("restart signgate to apply it");
    assert!(gateway.get("/upload-policy").starts_with("HTTP/1.1 200"));
    assert!(
        gateway.get(&format!("/go/{H}")).starts_with("HTTP/1.1 404"),
        "the routes of a refused file do not apply either"
    );
}

#[test]
fn a_route_whose_signing_did_not_change_keeps_its_cache() {
    let gateway = GatewayProcess::start(&config(
        SERVER,
        &redirect_route("https://cdn.filestackcontent.com"),
    ));
    let hits = || gateway.metric("signgate_signature_cache_hits_total{route=\"go\"}");
    let minted = || gateway.metric("signgate_credentials_minted_total{route=\"go\"}");
    let first = gateway.get(&format!("/go/{H}"));
    assert_eq!((hits(), minted()), (0.0, 1.0));

    // Another route added; `go` signs as before.
    gateway.rewrite(&config(
        SERVER,
        &format!(
            "{}{UPLOAD_ROUTE}",
            redirect_route("https://cdn.filestackcontent.com")
        ),
    ));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 1.0);
    let again = gateway.get(&format!("/go/{H}"));
    assert_eq!(location(&again), location(&first));
    assert_eq!((hits(), minted()), (1.0, 1.0), "served from the kept cache");
    assert!(gateway.get("/upload-policy").starts_with("HTTP/1.1 200"));

    // A new ttl changes what is signed: a fresh cache.
    gateway.rewrite(&config(
        SERVER,
        &format!(
            "{}ttl = \"2h\"\n",
            redirect_route("https://cdn.filestackcontent.com")
        ),
    ));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 2.0);
    gateway.get(&format!("/go/{H}"));
    assert_eq!((hits(), minted()), (1.0, 2.0));
}

fn signgate(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("runs")
}

#[test]
fn signgate_reload_signals_the_process_in_the_pid_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("signgate.pid");
    let server = format!("{SERVER}pid_file = \"{}\"\n", pid_file.display());
    let gateway = GatewayProcess::start(&config(&server, UPLOAD_ROUTE));
    let written = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(written.trim(), gateway.child.id().to_string());

    gateway.rewrite(&config(
        &server,
        &format!(
            "{UPLOAD_ROUTE}{}",
            redirect_route("https://cdn.filestackcontent.com")
        ),
    ));
    let out = signgate(&["reload"], &gateway.config_path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent SIGHUP"));
    gateway.wait_for_reloads("success", 1.0);
    assert!(gateway.get(&format!("/go/{H}")).starts_with("HTTP/1.1 307"));

    // --pid-file needs no config at all.
    let out = Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    gateway.wait_for_reloads("success", 2.0);

    assert_eq!(gateway.stop(), Some(0));
    assert!(!pid_file.exists(), "removed on a clean exit");
    let out = signgate(
        &["reload", "--pid-file", &pid_file.display().to_string()],
        Path::new("-"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the pid file"));
}

#[test]
fn signgate_reload_without_a_pid_file_says_what_to_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, format!("{SERVER}{SIGNING}{UPLOAD_ROUTE}")).expect("write");
    let out = signgate(&["reload"], &config);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set `server.pid_file`") && stderr.contains("SIGHUP"),
        "{stderr}"
    );
}

/// Which of `secrets` signed the credentials in a redirect's `location`.
fn signed_with<'a>(location: &str, secrets: &[&'a str]) -> Option<&'a str> {
    use hmac::{Hmac, KeyInit, Mac};
    let query = location.split_once('?').map_or("", |(_, query)| query);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    };
    let (policy, signature) = (param("policy"), param("signature"));
    secrets.iter().copied().find(|secret| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(policy.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hex == signature
    })
}

#[test]
fn a_rewritten_secret_file_is_in_use_without_sighup_and_an_empty_one_is_refused() {
    const FIRST: &str = "first-watched-secret-value";
    const SECOND: &str = "second-watched-secret-value";
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, FIRST).expect("write");
    let gateway = GatewayProcess::start(&format!(
        "{SERVER}{ADMIN}[signing]\nsecret_file = \"{}\"\n{}",
        secret.display(),
        redirect_route("https://cdn.example")
    ));
    let signed = || {
        let answer = gateway.get(&format!("/go/{H}"));
        signed_with(location(&answer), &[FIRST, SECOND])
    };
    assert_eq!(signed(), Some(FIRST));

    // Rewritten as a rotation script would: no signal is sent.
    std::fs::write(&secret, SECOND).expect("write");
    gateway.wait_for_reloads("success", 1.0);
    assert_eq!(signed(), Some(SECOND), "signed with the new secret");
    assert_eq!(gateway.metric("signgate_secret_file_changes_total"), 1.0);

    // An empty file is refused: the last good secret signs on, and the log says why.
    std::fs::write(&secret, "").expect("write");
    gateway.wait_for_reloads("failure", 1.0);
    assert_eq!(signed(), Some(SECOND), "the old secret kept");
    assert_eq!(gateway.metric("signgate_secret_file_changes_total"), 2.0);
    gateway.wait_for_log("is empty");
    let log = gateway.log();
    assert!(log.contains("secret file changed"), "{log}");
    assert!(
        log.contains("secret_file"),
        "the refusal names the key: {log}"
    );
    for value in [FIRST, SECOND] {
        assert!(!log.contains(value), "a secret in the log: {log}");
    }
}

#[test]
fn a_rewritten_cdn_entry_key_file_is_in_use_without_sighup() {
    const FIRST: &str = "first-s3-secret-access-key-value";
    const SECOND: &str = "second-s3-secret-access-key-value";
    const OBJECT: &str = "https://photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg";
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the site");
    let site = runtime.block_on(crate::support::start_origin(Arc::new(|_, _| {
        crate::support::respond(
            200,
            &[("content-type", "text/html")],
            format!("<img src=\"{OBJECT}\">"),
        )
    })));
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("s3");
    std::fs::write(&key, FIRST).expect("write");
    let gateway = GatewayProcess::start(&config(
        SERVER,
        &format!(
            "[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
             upstream = \"http://{site}\"\n\
             [[route.cdn]]\nhosts = [\"photos.s3.eu-west-1.amazonaws.com\"]\nscheme = \"s3\"\n\
             access_key_id = \"AKIAEXAMPLE\"\nregion = \"eu-west-1\"\nsecret_file = \"{}\"\n",
            key.display()
        ),
    ));
    // Which key signed the page's S3 URL.
    let signed_with = || {
        let page = gateway.get("/");
        let url = page
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no picture in {page}"))
            .replace("&amp;", "&");
        assert!(url.starts_with(OBJECT), "{url}");
        [FIRST, SECOND].into_iter().find(|secret| {
            let key = signgate::secret::TextSecret::new((*secret).to_owned()).expect("not empty");
            signgate::scheme::s3::S3Signer::new("AKIAEXAMPLE".into(), key, "eu-west-1".into())
                .expect("a signer")
                .verify(&url, crate::support::now())
                .is_ok()
        })
    };
    assert_eq!(signed_with(), Some(FIRST));

    // Only the entry's key changes, as a rotation on S3's side then a new file would.
    std::fs::write(&key, SECOND).expect("write");
    gateway.wait_for_reloads("success", 1.0);
    assert_eq!(
        signed_with(),
        Some(SECOND),
        "signed with the entry's new key"
    );
}

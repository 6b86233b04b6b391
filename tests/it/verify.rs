//! verify mode in front of Debian's nginx as the private origin (started by each test on a free
//! port, serving files from a folder and logging every request it gets): valid credentials in
//! every SDK spelling are served, and each refusal (tampered, expired, another handle, tasks
//! without `convert`, another secret) is answered by the gateway without the origin ever seeing
//! the request. Needs `nginx` (`nginx-light` is enough): a failure under CI without it, a skip
//! elsewhere.

use std::path::Path;

use base64::Engine;
use http::{Method, StatusCode};
use signgate::policy::{Call, Policy, PolicyLimits};
use signgate::secret::Secret;

use crate::support::nginx::{Nginx, free_port, nginx_missing};
use crate::support::process::{GatewayProcess, http_get};
use crate::support::*;

/// The file nginx serves as [`H`].
const FILE_H: &[u8] = b"the private file H";
/// The file nginx serves as [`H2`].
const FILE_H2: &[u8] = b"the private file H2";
/// What nginx serves for `resize=width:3/H`: a stand-in for an origin that transforms.
const RESIZED_H: &[u8] = b"H, resized";

/// nginx serving a folder, logging `METHOD TARGET` and the cookie and authorization it got for
/// each request to `seen.log`.
struct Origin {
    nginx: Nginx,
    port: u16,
}

impl Origin {
    /// The origin, or `None` where nginx is not installed (and not under CI): skip the test.
    fn start() -> Option<Self> {
        if nginx_missing("verify") {
            return None;
        }
        let port = free_port();
        let nginx = Nginx::start(
            |dir| {
                let files = dir.join("files");
                std::fs::create_dir_all(files.join("resize=width:3")).expect("folders");
                std::fs::write(files.join(H), FILE_H).expect("file");
                std::fs::write(files.join(H2), FILE_H2).expect("file");
                std::fs::write(files.join("resize=width:3").join(H), RESIZED_H).expect("file");
                format!(
                    "  default_type image/png;\n\
                     log_format seen '$request_method $request_uri cookie=$http_cookie \
                     authorization=$http_authorization';\n\
                     server {{\n    listen 127.0.0.1:{port};\n    root {files};\n\
                     access_log {log} seen;\n  }}",
                    files = files.display(),
                    log = dir.join("seen.log").display()
                )
            },
            &[port],
        );
        Some(Self { nginx, port })
    }

    /// Every request nginx got, one line each. nginx writes a line once it has sent its
    /// answer, so a marker request straight to nginx goes first, and the log is read once the
    /// marker is in it: its one worker logged every earlier request before serving the marker.
    fn seen(&self) -> Vec<String> {
        const MARKER: &str = "/marker-not-through-the-gateway";
        let log = self.nginx.dir().join("seen.log");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let before = read().matches(MARKER).count();
        http_get(&format!("127.0.0.1:{}", self.port), MARKER);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while read().matches(MARKER).count() == before {
            assert!(std::time::Instant::now() < deadline, "nginx never logged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        read()
            .lines()
            .filter(|line| !line.contains(MARKER))
            .map(str::to_owned)
            .collect()
    }

    /// A gateway with one verify route `files` on `/files/` in front of this origin.
    async fn gateway(&self, extra: &str) -> TestGateway {
        TestGateway::start(&format!(
            "{SIGNING}[[route]]\nname = \"files\"\nprefix = \"/files/\"\nmode = \"verify\"\n\
             upstream = \"http://127.0.0.1:{}\"\n{extra}\n",
            self.port
        ))
        .await
    }
}

fn read_policy(handle: &str) -> Policy {
    Policy {
        expiry: now() + 3600,
        call: vec![Call::Read],
        handle: Some(handle.to_owned()),
        limits: PolicyLimits::default(),
    }
}

/// `?policy=…&signature=…` for `policy`, signed with `secret`.
fn query(policy: &Policy, secret: &Secret) -> String {
    let credentials = policy.sign(secret);
    format!(
        "policy={}&signature={}",
        credentials.policy_for_query(),
        credentials.signature
    )
}

/// The policy string and signature of `policy` under the test secret.
fn signed(policy: &Policy) -> (String, String) {
    let credentials = policy.sign(&secret());
    (credentials.policy, credentials.signature)
}

/// `policy`, given a `url` of `~~~` (a byte that encodes as `/` whatever its offset), in the
/// standard base64 alphabet as the JavaScript SDK writes it, and its signature.
fn standard_alphabet(policy: &Policy) -> (String, String) {
    let policy = Policy {
        limits: PolicyLimits {
            url: Some("~~~".into()),
            ..PolicyLimits::default()
        },
        ..policy.clone()
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(policy.to_json());
    assert!(encoded.contains(['+', '/']), "{encoded}");
    let signature = secret().sign_hex(encoded.as_bytes());
    (encoded, signature)
}

#[tokio::test]
async fn valid_credentials_in_every_sdk_spelling_are_served_without_them() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let gateway = origin.gateway("").await;
    let (p, s) = signed(&read_policy(H));
    let pq = p.replace('=', "%3D");
    let (std_p, std_s) = standard_alphabet(&read_policy(H));
    let std_pq = std_p
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let long_query = format!("{}&policy={pq}&signature={s}", "junk=x&".repeat(5_000));
    let targets = [
        format!("/files/{H}?policy={pq}&signature={s}"),
        format!("/files/{H}?signature={s}&dl=true&policy={p}"),
        format!("/files/security=p:{p},s:{s}/{H}"),
        format!("/files/security=signature:{s},policy:{p}/{H}"),
        format!("/files/security=policy:%22{p}%22,signature:%22{s}%22/{H}"),
        format!("/files/{H}?policy={std_pq}&signature={std_s}"),
        format!("/files/security=p:%22{std_p}%22,s:{std_s}/{H}"),
        format!("/files/{H}?{long_query}"),
    ];
    for target in &targets {
        let answer = get(&gateway.url(target)).await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.text());
        assert_eq!(&answer.body[..], FILE_H, "{target}");
        assert_eq!(answer.headers["content-type"], "image/png");
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    }
    let head = send(Method::HEAD, &gateway.url(&targets[0]), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], FILE_H.len().to_string());
    let range = send(
        Method::GET,
        &gateway.url(&targets[0]),
        &[("range", "bytes=4-10")],
    )
    .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&range.body[..], &FILE_H[4..=10]);

    // The origin got the file's path alone: no credentials, no query, no client cookie.
    let seen = origin.seen();
    assert_eq!(seen.len(), targets.len() + 2, "{seen:#?}");
    let plain = format!("GET /{H} cookie=- authorization=-");
    let head_line = format!("HEAD /{H} cookie=- authorization=-");
    for line in &seen {
        assert!(*line == plain || *line == head_line, "{line}");
    }
    let with_cookie = send(
        Method::GET,
        &gateway.url(&targets[0]),
        &[("cookie", "session=1"), ("authorization", "Bearer x")],
    )
    .await;
    assert_eq!(with_cookie.status, StatusCode::OK);
    assert_eq!(origin.seen().last(), Some(&plain));
}

#[tokio::test]
async fn nothing_unverified_reaches_the_origin() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let gateway = origin.gateway("").await;
    let (p, s) = signed(&read_policy(H));
    let pq = p.replace('=', "%3D");
    let valid = format!("policy={pq}&signature={s}");
    let mut flipped = s.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("hex");
    let for_h2 = Policy {
        handle: Some(H2.into()),
        ..read_policy(H)
    };
    let expired = Policy {
        expiry: now() - 10,
        ..read_policy(H)
    };
    let other_secret = Secret::new("another app's secret".into()).expect("not empty");
    let refused: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            format!("/files/{H}"),
            403,
            "proper credentials were not provided: (signature: \"\"; policy \"\")",
        ),
        (
            Method::GET,
            format!("/files/{H}?policy={pq}"),
            403,
            "proper credentials were not provided",
        ),
        (
            Method::GET,
            format!("/files/{H}?policy={pq}&signature={flipped}"),
            403,
            "bad signature",
        ),
        // The policy re-encoded for another handle, under the first one's signature.
        (
            Method::GET,
            format!(
                "/files/{H2}?policy={}&signature={s}",
                for_h2.encode().replace('=', "%3D")
            ),
            403,
            "bad signature",
        ),
        (
            Method::GET,
            format!("/files/{H}?{}", query(&read_policy(H), &other_secret)),
            403,
            "bad signature",
        ),
        (
            Method::GET,
            format!("/files/{H}?{}", query(&expired, &secret())),
            403,
            "policy expired",
        ),
        (
            Method::GET,
            format!("/files/{H2}?{valid}"),
            403,
            "policy is for another handle",
        ),
        (
            Method::GET,
            format!("/files/{H}?{valid}&policy={pq}"),
            403,
            "malformed credentials",
        ),
        (
            Method::GET,
            format!("/files/security=p:{p},s:{s}/{H}?{valid}"),
            403,
            "malformed credentials",
        ),
        (
            Method::GET,
            format!("/files/security=p:{p},x:1/{H}"),
            403,
            "malformed credentials",
        ),
        (
            Method::GET,
            format!("/files/{H}?policy={}&signature={s}", "A".repeat(9_000)),
            403,
            "malformed credentials",
        ),
        (
            Method::GET,
            format!("/files/resize=width:3/{H}?{valid}"),
            403,
            "call convert not allowed by the policy",
        ),
        (
            Method::GET,
            format!("/files/..%2F{H}?{valid}"),
            400,
            "not a file handle",
        ),
        (
            Method::GET,
            format!("/files/{H2}%2F..%2F{H}?{valid}"),
            400,
            "not a file handle",
        ),
        (
            Method::GET,
            format!("/files/%2E%2E/%2E%2E/etc/passwd?{valid}"),
            400,
            "not a file handle",
        ),
        (
            Method::GET,
            format!("/files/{H}/metadata?{valid}"),
            400,
            "not a file handle",
        ),
        (
            Method::GET,
            format!("/files/%22https://example.com/a.png%22?{valid}"),
            400,
            "not a file handle",
        ),
        (
            Method::POST,
            format!("/files/{H}?{valid}"),
            405,
            "method not allowed",
        ),
        (
            Method::PUT,
            format!("/files/{H}?{valid}"),
            405,
            "method not allowed",
        ),
        (
            Method::DELETE,
            format!("/files/{H}?{valid}"),
            405,
            "method not allowed",
        ),
    ];
    for (method, target, status, says) in &refused {
        let answer = send(method.clone(), &gateway.url(target), &[]).await;
        assert_eq!(answer.status.as_u16(), *status, "{method} {target}");
        assert!(answer.text().contains(says), "{target}: {}", answer.text());
        assert!(
            !answer.text().contains(&s),
            "{target}: the body echoes a signature"
        );
        assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
        if *status == 405 {
            assert_eq!(answer.headers["allow"], "GET, HEAD");
        }
    }
    assert_eq!(origin.seen(), Vec::<String>::new(), "the origin was asked");
    // And the same gateway serves the valid request.
    let answer = get(&gateway.url(&format!("/files/{H}?{valid}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn expired_credentials_get_the_configured_status_after_the_grace() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let gateway = origin
        .gateway("expired_status = 410\nexpiry_grace = \"30s\"")
        .await;
    let at = |expiry| {
        let policy = Policy {
            expiry,
            ..read_policy(H)
        };
        gateway.url(&format!("/files/{H}?{}", query(&policy, &secret())))
    };
    let within = get(&at(now() - 10)).await;
    assert_eq!(within.status, StatusCode::OK, "{}", within.text());
    let past = get(&at(now() - 60)).await;
    assert_eq!(past.status, StatusCode::GONE);
    assert_eq!(
        past.text(),
        format!("file {H} policy error: policy expired\n")
    );
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn tasks_need_convert_in_the_policy_and_in_the_route_s_list() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let plain = origin.gateway("").await;
    let resizing = origin.gateway("tasks = [\"resize\"]").await;
    let convert = Policy {
        call: vec![Call::Read, Call::Convert],
        ..read_policy(H)
    };
    let (p, s) = signed(&convert);
    let read_only = query(&read_policy(H), &secret());
    let resize = format!("/files/resize=width:3/{H}?{}", query(&convert, &secret()));

    let no_convert = get(&resizing.url(&format!("/files/resize=width:3/{H}?{read_only}"))).await;
    assert_eq!(no_convert.status, StatusCode::FORBIDDEN);
    assert!(no_convert.text().contains("call convert not allowed"));
    let not_listed = get(&plain.url(&resize)).await;
    assert_eq!(not_listed.status, StatusCode::FORBIDDEN);
    assert!(not_listed.text().contains("task not allowed on this route"));
    let other_task =
        get(&resizing.url(&format!("/files/flip/{H}?{}", query(&convert, &secret())))).await;
    assert_eq!(other_task.status, StatusCode::FORBIDDEN);
    assert_eq!(origin.seen(), Vec::<String>::new());

    // With convert granted and the task listed, the task goes to the origin, credentials not;
    // the security task may stand before or after the transformations.
    for target in [
        resize.clone(),
        format!("/files/security=p:{p},s:{s}/resize=width:3/{H}"),
        format!("/files/resize=width:3/security=p:{p},s:{s}/{H}"),
    ] {
        let answer = get(&resizing.url(&target)).await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.text());
        assert_eq!(&answer.body[..], RESIZED_H);
    }
    let expected = format!("GET /resize=width:3/{H} cookie=- authorization=-");
    assert_eq!(origin.seen(), vec![expected; 3]);
}

#[tokio::test]
async fn a_policy_without_a_handle_reads_any_file_as_on_the_cdn() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let gateway = origin.gateway("").await;
    let any = Policy {
        handle: None,
        ..read_policy(H)
    };
    let credentials = query(&any, &secret());
    for (handle, file) in [(H, FILE_H), (H2, FILE_H2)] {
        let answer = get(&gateway.url(&format!("/files/{handle}?{credentials}"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], file);
    }
    // A `path` in the policy holds it to the file's path on the origin.
    let one_path = Policy {
        handle: None,
        limits: PolicyLimits {
            path: Some(format!("^/{H}$")),
            ..PolicyLimits::default()
        },
        ..read_policy(H)
    };
    let credentials = query(&one_path, &secret());
    let allowed = get(&gateway.url(&format!("/files/{H}?{credentials}"))).await;
    assert_eq!(allowed.status, StatusCode::OK);
    let other = get(&gateway.url(&format!("/files/{H2}?{credentials}"))).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(other.text().contains("path not allowed by the policy"));
    assert_eq!(origin.seen().len(), 3);
}

/// A gateway with two verify routes in front of `origin`, each with its own secret file:
/// `/a/` under `a`, `/b/` under `b`.
async fn two_secrets(origin: &Origin, dir: &Path) -> TestGateway {
    std::fs::write(dir.join("a"), "secret of route a").expect("secret");
    std::fs::write(dir.join("b"), "secret of route b").expect("secret");
    let route = |name: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nprefix = \"/{name}/\"\nmode = \"verify\"\n\
             upstream = \"http://127.0.0.1:{}\"\nsecret_file = \"{}\"\n",
            origin.port,
            dir.join(name).display()
        )
    };
    TestGateway::start(&format!("{SIGNING}{}{}", route("a"), route("b"))).await
}

#[tokio::test]
async fn credentials_for_one_route_s_secret_are_refused_on_another_s() {
    let Some(origin) = Origin::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = two_secrets(&origin, dir.path()).await;
    let a = Secret::new("secret of route a".into()).expect("not empty");
    let credentials = query(&read_policy(H), &a);
    let on_a = get(&gateway.url(&format!("/a/{H}?{credentials}"))).await;
    assert_eq!(on_a.status, StatusCode::OK);
    let on_b = get(&gateway.url(&format!("/b/{H}?{credentials}"))).await;
    assert_eq!(on_b.status, StatusCode::FORBIDDEN);
    assert!(on_b.text().contains("bad signature"));
    // The [signing] secret, which the routes override, is no key either.
    let default = get(&gateway.url(&format!("/a/{H}?{}", query(&read_policy(H), &secret())))).await;
    assert_eq!(default.status, StatusCode::FORBIDDEN);
    assert_eq!(origin.seen().len(), 1);
}

/// `[signing]` with a current and a next secret, each in a file of `dir`, switching at
/// `switch_at`; one verify route in front of `origin`.
async fn rotating(origin: &Origin, dir: &Path, switch_at: &str) -> TestGateway {
    std::fs::write(dir.join("current"), "the old secret").expect("secret");
    std::fs::write(dir.join("next"), "the new secret").expect("secret");
    TestGateway::start(&format!(
        "[signing]\nsecret_file = \"{}\"\nsecret_next_file = \"{}\"\nswitch_at = \"{switch_at}\"\n\
         [[route]]\nname = \"files\"\nprefix = \"/files/\"\nmode = \"verify\"\n\
         upstream = \"http://127.0.0.1:{}\"\n",
        dir.join("current").display(),
        dir.join("next").display(),
        origin.port
    ))
    .await
}

/// With `[signing]` switching to the next secret at `switch_at`, what `GET /files/H` answers
/// with credentials signed by each secret of `expected`.
async fn assert_rotation(switch_at: &str, expected: &[(&str, StatusCode)]) {
    let Some(origin) = Origin::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = rotating(&origin, dir.path(), switch_at).await;
    for (secret, status) in expected {
        let secret_key = Secret::new((*secret).into()).expect("not empty");
        let target = format!("/files/{H}?{}", query(&read_policy(H), &secret_key));
        assert_eq!(get(&gateway.url(&target)).await.status, *status, "{secret}");
    }
}

#[tokio::test]
async fn during_a_rotation_the_old_and_the_new_secret_are_both_accepted() {
    assert_rotation(
        "2099-01-01T00:00:00Z",
        &[
            ("the old secret", StatusCode::OK),
            ("the new secret", StatusCode::OK),
            ("neither", StatusCode::FORBIDDEN),
        ],
    )
    .await;
}

#[tokio::test]
async fn after_a_rotation_the_old_secret_is_refused() {
    assert_rotation(
        "2001-01-01T00:00:00Z",
        &[
            ("the old secret", StatusCode::FORBIDDEN),
            ("the new secret", StatusCode::OK),
        ],
    )
    .await;
}

#[test]
fn the_access_log_and_the_metrics_say_which_check_failed() {
    let Some(origin) = Origin::start() else {
        return;
    };
    // The real binary: its log is its own, whatever other tests log meanwhile.
    let gateway = GatewayProcess::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{SIGNING}\
         [[route]]\nname = \"files\"\nprefix = \"/files/\"\nmode = \"verify\"\n\
         upstream = \"http://127.0.0.1:{}\"\n",
        origin.port
    ));
    let valid = query(&read_policy(H), &secret());
    let expired = query(
        &Policy {
            expiry: now() - 10,
            ..read_policy(H)
        },
        &secret(),
    );
    for target in [
        format!("/files/{H}?{valid}"),
        format!("/files/{H}?{valid}"),
        format!("/files/{H}"),
        format!("/files/{H}?{}", valid.replace("signature=", "signature=0")),
        format!("/files/{H}?{expired}"),
        format!("/files/{H2}?{valid}"),
        format!("/files/nothandle?{valid}"),
    ] {
        gateway.get(&target);
    }
    for (result, count) in [
        ("valid", 2.0),
        ("missing", 1.0),
        ("signature", 1.0),
        ("expired", 1.0),
        ("handle", 1.0),
        ("target", 1.0),
        ("call", 0.0),
        ("task", 0.0),
    ] {
        let series = format!("signgate_verify_total{{route=\"files\",result=\"{result}\"}}");
        assert_eq!(gateway.metric(&series), count, "{series}");
    }
    // The log is read from the process's stderr as it comes: wait for the seventh line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let access = |log: &str| log.matches("signgate::access").count();
    while access(&gateway.log()) < 7 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = gateway.log();
    let logged: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("signgate::access"))
        .filter_map(|line| line.split(" verify=").nth(1))
        .collect();
    assert_eq!(
        logged,
        [
            "valid",
            "valid",
            "missing",
            "signature",
            "expired",
            "handle",
            "target"
        ],
        "{log}"
    );
}

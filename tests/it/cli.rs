//! The `signgate` binary: `sign`, `check` and `explain`, with their exit codes.

use crate::support;

use std::io::Write;
use std::process::{Command, Output};

use ring::hmac;
use support::{H, SECRET};

fn config_file(extra_route: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "[signing]\nsecret_env = \"SIGNGATE_TEST_SECRET\"\n\
         [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
         upstream = \"https://cdn.filestackcontent.com\"\ncalls = [\"read\", \"convert\"]\n\
         [[route]]\nname = \"upload\"\nprefix = \"/up\"\nmode = \"upload-policy\"\nmax_size = \"1MB\"\n{extra_route}"
    )
    .expect("write");
    file
}

fn signgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(args)
        .env("SIGNGATE_TEST_SECRET", SECRET)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sign(config: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["sign", "--config", config, "--route", "images"];
    args.extend_from_slice(extra);
    let out = signgate(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout(&out).trim()).expect("one JSON line")
}

#[test]
fn sign_output_verifies_with_an_independent_hmac() {
    let file = config_file("");
    let config = file.path().to_str().expect("utf-8 path");
    let json = sign(config, &["--handle", H, "--expiry", "4102444800"]);
    let policy = json["policy"].as_str().expect("policy");
    let signature = json["signature"].as_str().expect("signature");
    // ring's HMAC, not the RustCrypto one signgate uses.
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = hmac::sign(&key, policy.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(signature, hex);
    assert_eq!(json["expiry"], 4102444800_u64);
    assert_eq!(
        json["url"].as_str().expect("url"),
        format!(
            "https://cdn.filestackcontent.com/{H}?policy={}&signature={signature}",
            policy.replace('=', "%3D")
        )
    );
    let decoded = signgate::policy::DecodedPolicy::decode(policy).expect("decodes");
    assert_eq!(
        decoded.json,
        format!(r#"{{"expiry":4102444800,"call":["read","convert"],"handle":"{H}"}}"#)
    );
}

#[test]
fn sign_without_expiry_rounds_to_the_bucket_and_upload_routes_carry_limits() {
    let file = config_file("");
    let config = file.path().to_str().expect("utf-8 path");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let json = sign(config, &["--handle", H]);
    let expiry = json["expiry"].as_u64().expect("expiry");
    assert!(
        expiry >= now + 3600 && expiry.is_multiple_of(300),
        "{expiry}"
    );

    let out = signgate(&["sign", "--config", config, "--route", "upload"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert!(json.get("url").is_none());
    let decoded = signgate::policy::DecodedPolicy::decode(json["policy"].as_str().expect("policy"))
        .expect("decodes");
    assert_eq!(decoded.limits.max_size, Some(1_000_000));
    assert_eq!(
        decoded.call,
        Some(vec!["pick".to_owned(), "store".to_owned()])
    );
}

#[test]
fn sign_refuses_an_unknown_route_or_a_bad_handle_with_exit_2() {
    let file = config_file("");
    let config = file.path().to_str().expect("utf-8 path");
    let out = signgate(&["sign", "--config", config, "--route", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named \"nope\""));
    let out = signgate(&[
        "sign", "--config", config, "--route", "images", "--handle", "../etc",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--handle"));
}

#[test]
fn sign_refuses_an_expiry_in_the_past_and_points_site_urls_at_the_cdn() {
    let file = config_file(
        "[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
         upstream = \"http://127.0.0.1:3000\"\nrewrite_hosts = [\"cdn.example.com\"]\n",
    );
    let config = file.path().to_str().expect("utf-8 path");
    let out = signgate(&[
        "sign", "--config", config, "--route", "images", "--handle", H, "--expiry", "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--expiry") && err.contains("in the past"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    let out = signgate(&["sign", "--config", config, "--route", "site", "--handle", H]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    let url = json["url"].as_str().expect("a url for a handle");
    assert!(
        url.starts_with(&format!("https://cdn.example.com/{H}?policy=")),
        "a site route's URL is on its CDN, not the site: {url}"
    );
}

#[test]
fn config_may_stand_before_or_after_the_subcommand() {
    let good = config_file("");
    let path = good.path().to_str().expect("utf-8");
    for args in [["--config", path, "check"], ["check", "--config", path]] {
        let out = signgate(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).starts_with(path),
            "{args:?} checked another file"
        );
    }
}

#[test]
fn check_warns_about_a_secret_not_set_here_and_strict_refuses_it() {
    let good = config_file("");
    let path = good.path().to_str().expect("utf-8");
    let unset = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_signgate"))
            .args(args)
            .env_remove("SIGNGATE_TEST_SECRET")
            .output()
            .expect("the binary runs")
    };
    let out = unset(&["check", "--config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: `signing.secret_env`: environment variable SIGNGATE_TEST_SECRET is not set"
        ),
        "{err}"
    );
    let out = unset(&["check", "--strict", "--config", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGNGATE_TEST_SECRET is not set"));
    // With the secret set, --strict passes.
    let out = signgate(&["check", "--strict", "--config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_accepts_a_good_config_and_names_the_key_of_a_bad_one() {
    let good = config_file("");
    let out = signgate(&["check", "--config", good.path().to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("ok (2 routes)"));

    let bad = config_file(
        "[[route]]\nname = \"x\"\nprefix = \"/x/\"\nmode = \"proxy\"\nupstream = \"cdn\"\n",
    );
    let out = signgate(&["check", "--config", bad.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route `x`: `upstream`: must be an absolute http(s) URL"),
        "{err}"
    );
    assert!(!err.contains(SECRET));

    let out = signgate(&["check", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_tells_valid_from_tampered_expired_and_wrong_handle() {
    let file = config_file("");
    let config = file.path().to_str().expect("utf-8 path");
    let json = sign(config, &["--handle", H, "--expiry", "4102444800"]);
    let url = json["url"].as_str().expect("url").to_owned();

    let out = signgate(&["explain", &url, "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("valid:         yes, for route `images`"),
        "{text}"
    );
    assert!(text.contains("2100-01-01T00:00:00Z"), "{text}");
    assert!(text.contains(&format!(r#""handle":"{H}""#)), "{text}");
    assert!(text.contains(&format!(
        "signed string: {}",
        json["policy"].as_str().expect("p")
    )));

    let tampered = url.replacen("eyJ", "eyK", 1);
    let out = signgate(&["explain", &tampered, "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no: bad signature"),
        "{}",
        stdout(&out)
    );

    // `sign` refuses a past expiry, so the expired URL is signed here, as an old page kept it.
    let policy = signgate::policy::Policy {
        expiry: 1_500_000_000,
        call: vec![
            signgate::policy::Call::Read,
            signgate::policy::Call::Convert,
        ],
        handle: Some(H.to_owned()),
        ..Default::default()
    };
    let credentials = policy.sign(&signgate::secret::Secret::new(SECRET.into()).expect("secret"));
    let expired = format!(
        "https://cdn.filestackcontent.com/{H}?policy={}&signature={}",
        credentials.policy_for_query(),
        credentials.signature
    );
    let out = signgate(&["explain", &expired, "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no: expired at 1500000000"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("2017-07-14T02:40:00Z"),
        "{}",
        stdout(&out)
    );

    let wrong = url.replace(H, "AAAAAAAAAAAAAAAAAAAA");
    let out = signgate(&["explain", &wrong, "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no: policy is for handle"),
        "{}",
        stdout(&out)
    );

    let bare = format!("https://cdn.filestackcontent.com/{H}");
    let out = signgate(&["explain", &bare, "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("credentials missing"));

    let out = signgate(&["explain", &url, "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A config for `signgate run` on a free port, one upload-policy route.
fn run_config(workers: usize) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n[signing]\nsecret_env = \"SIGNGATE_TEST_SECRET\"\n\
         [[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n"
    )
    .expect("write");
    file
}

/// Starts `signgate run --config CONFIG` through `sh -c`, after the shell commands in `before`;
/// returns the child and the address it printed.
fn start_run(config: &tempfile::NamedTempFile, before: &str) -> (std::process::Child, String) {
    start_run_with(config, before, "", "")
}

/// [`start_run`] with arguments `pre` before the subcommand and `post` after it.
fn start_run_with(
    config: &tempfile::NamedTempFile,
    before: &str,
    pre: &str,
    post: &str,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{before} exec \"$0\" {pre} run --config \"$1\" {post}"
        ))
        .arg(env!("CARGO_BIN_EXE_signgate"))
        .arg(config.path())
        .env("SIGNGATE_TEST_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("address")
        .to_owned();
    (child, addr)
}

/// Sends SIGTERM and returns the exit code and what the process wrote to stderr; fails if the
/// process is still running 10 s later.
fn stop_run(mut child: std::process::Child) -> (Option<i32>, String) {
    use std::io::Read;
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status.code(), stderr.join().expect("stderr reader"))
}

/// Signals a process catches, from `/proc/PID/status` (`SigCgt`, bit N-1 for signal N).
fn caught_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .expect("a SigCgt line");
    u64::from_str_radix(mask.trim(), 16).expect("hex mask")
}

#[test]
fn run_serves_until_sigterm_then_exits_0() {
    use std::io::{Read, Write as _};
    let config = run_config(2);
    let (child, addr) = start_run(&config, "");
    for _ in 0..4 {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connects");
        stream
            .write_all(b"GET /upload-policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"signature\":\"") && !answer.contains(SECRET));
    }
    let (code, _) = stop_run(child);
    assert_eq!(code, Some(0));
}

#[test]
fn run_catches_sigint_and_sigterm_before_it_announces_its_address() {
    let config = run_config(1);
    let (child, _) = start_run(&config, "");
    // Checked at once, without waiting: the handlers are in place when the address is printed.
    let caught = caught_signals(child.id());
    assert_ne!(caught & (1 << (2 - 1)), 0, "SIGINT not caught: {caught:x}");
    assert_ne!(
        caught & (1 << (15 - 1)),
        0,
        "SIGTERM not caught: {caught:x}"
    );
    let (code, _) = stop_run(child);
    assert_eq!(code, Some(0));
}

#[test]
fn run_raises_the_open_file_limit_and_warns_when_the_hard_limit_is_short() {
    // The default max_connections (10,000) needs far more than a hard limit of 1,024.
    let hard = std::fs::read_to_string("/proc/self/limits")
        .expect("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok());
    if hard.is_some_and(|hard| hard < 1024) {
        eprintln!("skipped: this process's hard open-file limit is below 1,024");
        return;
    }
    let config = run_config(1);
    let (child, addr) = start_run(&config, "ulimit -Sn 256 && ulimit -Hn 1024 &&");
    assert!(addr.starts_with("127.0.0.1:"), "{addr:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    assert_eq!(fields[3..5], ["1024", "1024"], "{open_files}");
    let (code, stderr) = stop_run(child);
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("open-file limit is 1024")
            && stderr.contains("10072")
            && stderr.contains("server.max_connections"),
        "{stderr}"
    );
}

#[test]
fn run_logs_json_from_the_flag_or_the_config_and_the_flag_wins() {
    use std::io::{Read, Write as _};
    let text_config = run_config(1);
    let mut json_config = run_config(1);
    writeln!(json_config, "[log]\nformat = \"json\"").expect("write");
    for (config, pre, post, json) in [
        (&text_config, "--log-format json", "", true),
        (&json_config, "", "", true),
        (&json_config, "", "--log-format text", false),
        (&text_config, "", "", false),
    ] {
        let (child, addr) = start_run_with(config, "", pre, post);
        let mut stream = std::net::TcpStream::connect(&addr).expect("connects");
        stream
            .write_all(
                b"GET /upload-policy HTTP/1.1\r\nHost: x\r\nX-Request-Id: cli-id-1\r\nConnection: close\r\n\r\n",
            )
            .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (code, stderr) = stop_run(child);
        assert_eq!(code, Some(0));
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(lines.len() > 2, "{stderr}");
        let parsed: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if json {
            assert_eq!(parsed.len(), lines.len(), "{pre} {post}: {stderr}");
            let access = parsed
                .iter()
                .find(|l| l["target"] == "signgate::access")
                .unwrap_or_else(|| panic!("no access line: {stderr}"));
            assert_eq!(access["request_id"], "cli-id-1");
            assert_eq!(access["route"], "upload");
            assert_eq!(access["status"], 200);
        } else {
            assert!(parsed.is_empty(), "{pre} {post}: {stderr}");
            assert!(stderr.contains("request_id=cli-id-1"), "{stderr}");
        }
    }
}

#[test]
fn check_reports_a_secret_switch_and_refuses_one_that_has_passed_with_a_next_secret() {
    let next = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(next.path(), "n3xt").expect("write");
    let with_switch = |at: &str| {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        write!(
            file,
            "[signing]\nsecret_env = \"SIGNGATE_TEST_SECRET\"\nsecret_next_file = \"{}\"\n\
             switch_at = {at}\n\
             [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
             upstream = \"https://cdn.filestackcontent.com\"\n",
            next.path().display()
        )
        .expect("write");
        file
    };
    let ahead = with_switch("2099-01-01T00:00:00Z");
    let out = signgate(&["check", "--config", ahead.path().to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("route `images`: switches to the next secret at 2099-01-01T00:00:00Z (in "),
        "{text}"
    );

    let passed = with_switch("\"2020-01-01T00:00:00+02:00\"");
    let out = signgate(&["check", "--config", passed.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route `images`: `switch_at`: 2019-12-31T22:00:00Z has passed while `secret_next_*` is set"),
        "{err}"
    );
    assert!(!err.contains("n3xt") && !stdout(&out).contains("n3xt"));
}

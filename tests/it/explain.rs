//! `signgate explain` as a newcomer runs it: with or without a secret, on download, transformed
//! and upload URLs, on URLs copied from HTML, and on input that is not a URL at all.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use signgate::policy::{Call, Policy};
use signgate::secret::Secret;

const SECRET: &str = "explain-test-secret";
const VAR: &str = "SIGNGATE_EXPLAIN_TEST_SECRET";
const H: &str = "KW9EJhYtS6y48Whm2S6D";
const FAR: u64 = 4_102_444_800; // 2100-01-01

/// Runs `signgate explain ARGS` in `dir` (no gateway.toml there unless the test writes one), with
/// the secret variable set only when `with_secret`.
fn explain_in(dir: &Path, args: &[&str], with_secret: bool) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signgate"));
    command
        .arg("explain")
        .args(args)
        .current_dir(dir)
        .env_remove(VAR);
    if with_secret {
        command.env(VAR, SECRET);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "the secret was printed"
    );
    (status.code(), stdout, stderr)
}

fn explain(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    explain_in(dir.path(), args, true)
}

/// `https://cdn.filestackcontent.com{path}?policy=…&signature=…` for a policy granting `calls`.
fn signed(path: &str, calls: &[Call], handle: Option<&str>) -> String {
    let credentials = Policy {
        expiry: FAR,
        call: calls.to_vec(),
        handle: handle.map(str::to_owned),
        ..Policy::default()
    }
    .sign(&Secret::new(SECRET.into()).expect("not empty"));
    format!(
        "https://cdn.filestackcontent.com{path}?policy={}&signature={}",
        credentials.policy_for_query(),
        credentials.signature
    )
}

fn config_file(dir: &Path) {
    let mut file = std::fs::File::create(dir.join("gateway.toml")).expect("config");
    write!(
        file,
        "[signing]\nsecret_env = \"{VAR}\"\n\
         [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
         upstream = \"https://cdn.filestackcontent.com\"\n"
    )
    .expect("write");
}

#[test]
fn input_that_is_not_a_url_exits_2() {
    for input in [
        "",
        "hello world",
        "not-a-url",
        "ftp://example.com/x",
        "https://",
    ] {
        let (code, stdout, stderr) = explain(&["--secret-env", VAR, input]);
        assert_eq!(code, Some(2), "{input:?}: {stdout}{stderr}");
        assert!(stderr.contains("not a URL"), "{input:?}: {stderr}");
        assert!(stdout.is_empty(), "{input:?}: {stdout}");
    }
}

#[test]
fn without_a_config_the_url_is_decoded_and_the_signature_not_checked() {
    let url = signed(&format!("/{H}"), &[Call::Read], Some(H));
    let (code, stdout, _) = explain(&[&url]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("handle:        {H}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy json:   {\"expiry\":4102444800"),
        "{stdout}"
    );
    assert!(stdout.contains("2100-01-01T00:00:00Z"), "{stdout}");
    assert!(
        stdout.contains("signature:     not checked: no secret: no --secret-env or --secret-file, and no gateway.toml here"),
        "{stdout}"
    );
    assert!(stdout.contains("valid:         unknown"), "{stdout}");
}

#[test]
fn a_config_whose_secret_variable_is_not_set_still_decodes_and_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    config_file(dir.path());
    let url = signed(&format!("/{H}"), &[Call::Read], Some(H));
    let (code, stdout, stderr) = explain_in(dir.path(), &[&url], false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "signature:     not checked: {VAR} is not set in this shell (route `images`)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("calls granted: read\n"), "{stdout}");

    // The same config, with the variable set, checks it.
    let (code, stdout, _) = explain_in(dir.path(), &[&url], true);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("valid:         yes, for route `images`'s secret"),
        "{stdout}"
    );
}

#[test]
fn a_secret_can_be_named_for_one_check_by_variable_or_file() {
    let url = signed(&format!("/{H}"), &[Call::Read], Some(H));
    let (code, stdout, _) = explain(&["--secret-env", VAR, &url]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("valid:         yes, for the secret in {VAR}")),
        "{stdout}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("secret file");
    let file = file.to_str().expect("utf-8 path");
    let (code, stdout, _) = explain(&["--secret-file", file, &url]);
    assert_eq!(code, Some(0), "{stdout}");

    let (code, _, stderr) = explain_in(dir.path(), &["--secret-env", VAR, &url], false);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(&format!("{VAR} is not set")), "{stderr}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-secret").expect("secret file");
    let (code, stdout, _) = explain(&["--secret-file", wrong.to_str().expect("utf-8"), &url]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("valid:         no: bad signature"),
        "{stdout}"
    );
}

#[test]
fn the_calls_the_policy_grants_are_checked_against_what_the_url_asks_for() {
    let thumbnail = format!("/resize=width:300/{H}");
    let url = signed(&thumbnail, &[Call::Read], Some(H));
    let (code, stdout, _) = explain(&["--secret-env", VAR, &url]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("tasks:         resize=width:300\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("calls needed:  read, convert\n"),
        "{stdout}"
    );
    assert!(stdout.contains("calls granted: read\n"), "{stdout}");
    assert!(
        stdout.contains("valid:         no: call convert not allowed by the policy"),
        "{stdout}"
    );

    let url = signed(&thumbnail, &[Call::Read, Call::Convert], Some(H));
    let (code, stdout, _) = explain(&["--secret-env", VAR, &url]);
    assert_eq!(code, Some(0), "{stdout}");

    // Metadata needs `stat`, which a read-only policy does not grant.
    let url = signed(&format!("/{H}/metadata"), &[Call::Read], Some(H));
    let (code, stdout, _) = explain(&["--secret-env", VAR, &url]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("call stat not allowed"), "{stdout}");
}

#[test]
fn upload_urls_are_explained_as_uploads_that_need_store() {
    let store = signed("/api/store/S3", &[Call::Pick, Call::Store], None)
        .replace("cdn.filestackcontent.com", "www.filestackapi.com")
        + "&key=AhTgLagciQByzXpFGRI0Az&path=%2Fgallery%2F";
    let (code, stdout, _) = explain(&["--secret-env", VAR, &store]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("kind:          upload (store API)"),
        "{stdout}"
    );
    assert!(stdout.contains("storage:       S3\n"), "{stdout}");
    assert!(stdout.contains("upload path:   /gallery/\n"), "{stdout}");
    assert!(stdout.contains("calls needed:  store\n"), "{stdout}");
    assert!(stdout.contains("calls granted: pick, store\n"), "{stdout}");
    assert!(
        !stdout.contains("handle:") && !stdout.contains("tasks:"),
        "{stdout}"
    );

    let read_only = signed("/api/store/S3", &[Call::Read], None);
    let (code, stdout, _) = explain(&["--secret-env", VAR, &read_only]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("no: call store not allowed"), "{stdout}");
}

#[test]
fn a_url_copied_from_html_with_escaped_ampersands_is_noted_and_read() {
    let url = signed(&format!("/{H}"), &[Call::Read], Some(H));
    let from_html = url.replace('&', "&amp;");
    let (code, stdout, _) = explain(&["--secret-env", VAR, &from_html]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.starts_with("note:          the URL holds `&amp;`"),
        "{stdout}"
    );
}

#[test]
fn help_documents_the_exit_codes_and_the_secret_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(["explain", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes: 0 valid"), "{help}");
    assert!(
        help.contains("--secret-env <VAR>") && help.contains("--secret-file <FILE>"),
        "{help}"
    );
}

#[test]
fn a_url_signed_with_the_next_secret_is_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    let next = dir.path().join("next");
    std::fs::write(&next, "the-next-secret").expect("write");
    let mut file = std::fs::File::create(dir.path().join("gateway.toml")).expect("config");
    write!(
        file,
        "[signing]\nsecret_env = \"{VAR}\"\nsecret_next_file = \"{}\"\n\
         [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
         upstream = \"https://cdn.filestackcontent.com\"\n",
        next.display()
    )
    .expect("write");
    let with_next = Policy {
        expiry: FAR,
        call: vec![Call::Read],
        handle: Some(H.to_owned()),
        ..Policy::default()
    }
    .sign(&Secret::new("the-next-secret".into()).expect("not empty"));
    let url = format!(
        "https://cdn.filestackcontent.com/{H}?policy={}&signature={}",
        with_next.policy_for_query(),
        with_next.signature
    );
    let (code, out, _) = explain_in(dir.path(), &[&url], true);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("matches route `images`'s next secret (`secret_next_*`)"),
        "{out}"
    );
    let (code, out, _) = explain_in(
        dir.path(),
        &[&signed(&format!("/{H}"), &[Call::Read], Some(H))],
        true,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("matches route `images`'s secret"), "{out}");
}

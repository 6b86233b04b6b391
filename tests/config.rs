//! `gateway.toml` parsing: the repository's own file, defaults, and a message naming the key for
//! every kind of mistake.

use std::io::Write;
use std::time::Duration;

use signgate::config::{Config, ConfigError, Mode};
use signgate::filelink::UrlStyle;
use signgate::policy::Call;

fn env(name: &str) -> Option<String> {
    match name {
        "FILESTACK_SECRET" => Some("test-secret".into()),
        "EMPTY_SECRET" => Some(String::new()),
        _ => None,
    }
}

fn parse(toml: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(toml, env)
}

fn error_of(toml: &str) -> String {
    match parse(toml) {
        Ok(_) => panic!("config was accepted:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

const SIGNING: &str = "[signing]\nsecret_env = \"FILESTACK_SECRET\"\n";
const PROXY: &str = "[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"https://cdn.filestackcontent.com\"\n";

#[test]
fn the_repository_gateway_toml_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"))
        .expect("gateway.toml is in the repository");
    let config = parse(&text).expect("gateway.toml is valid");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["images", "links", "upload", "site"]);
    let upload = config.route("upload").expect("upload route");
    assert_eq!(upload.mode, Mode::UploadPolicy);
    assert_eq!(upload.limits.max_size, Some(1_000_000));
    assert_eq!(upload.limits.path.as_deref(), Some("/gallery/"));
    let images = config.route("images").expect("images route");
    assert_eq!(images.limits.calls, [Call::Read, Call::Convert]);
    assert_eq!(images.signing.ttl, Duration::from_secs(3600));
    assert_eq!(images.signing.bucket, Duration::from_secs(300));
}

#[test]
fn defaults_fill_what_is_not_set() {
    let config = parse(&format!("{SIGNING}{PROXY}")).expect("valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    let route = &config.routes[0];
    assert_eq!(route.limits.calls, [Call::Read]);
    assert_eq!(route.signing.ttl, Duration::from_secs(3600));
    assert_eq!(route.signing.bucket, Duration::from_secs(300));
    assert_eq!(route.signing.cache_size.get(), 100_000);
    assert_eq!(route.signing.url_style, UrlStyle::Query);
    assert_eq!(route.rewrite_hosts, ["cdn.filestackcontent.com"]);
    let site = parse(&format!(
        "{SIGNING}[[route]]\nname = \"s\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://127.0.0.1:3000\"\n"
    ))
    .expect("valid");
    assert_eq!(site.routes[0].limits.calls, [Call::Read, Call::Convert]);
    let upload = parse(&format!(
        "{SIGNING}[[route]]\nname = \"u\"\nprefix = \"/p\"\nmode = \"upload-policy\"\n"
    ))
    .expect("valid");
    assert_eq!(upload.routes[0].limits.calls, [Call::Pick, Call::Store]);
}

#[test]
fn a_route_overrides_signing_defaults() {
    let config = parse(&format!(
        "{SIGNING}ttl = \"2h\"\n{PROXY}ttl = \"90s\"\nbucket = \"1m\"\nurl_style = \"task\"\ncache_size = 5\n"
    ))
    .expect("valid");
    let signing = &config.routes[0].signing;
    assert_eq!(signing.ttl, Duration::from_secs(90));
    assert_eq!(signing.bucket, Duration::from_secs(60));
    assert_eq!(signing.url_style, UrlStyle::Task);
    assert_eq!(signing.cache_size.get(), 5);
}

#[test]
fn secret_file_is_read_with_its_trailing_newline_trimmed() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "from-a-file").expect("write");
    let toml = format!(
        "[signing]\nsecret_file = {:?}\n{PROXY}",
        file.path().display().to_string()
    );
    let config = parse(&toml).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let expected = signgate::secret::Secret::new("from-a-file".into()).expect("not empty");
    assert_eq!(
        config.routes[0].signing.secret.sign_hex(b"x"),
        expected.sign_hex(b"x")
    );
}

/// Each row: a config, and words its error must contain (the key, then the reason).
#[test]
fn every_bad_config_names_the_key_and_the_reason() {
    let empty_file = tempfile::NamedTempFile::new().expect("temp file");
    let empty_file = empty_file.path().display().to_string();
    let cases: Vec<(String, &[&str])> = vec![
        (
            format!("{SIGNING}{PROXY}colour = \"red\"\n"),
            &["colour", "unknown field"],
        ),
        (
            format!("{SIGNING}typo = 1\n{PROXY}"),
            &["typo", "unknown field"],
        ),
        (
            format!("[sever]\n{SIGNING}{PROXY}"),
            &["sever", "unknown field"],
        ),
        (PROXY.to_owned(), &["images", "no secret"]),
        (
            format!("[signing]\nsecret_env = \"NOPE\"\n{PROXY}"),
            &["signing.secret_env", "NOPE", "not set"],
        ),
        (
            format!("[signing]\nsecret_env = \"EMPTY_SECRET\"\n{PROXY}"),
            &["signing.secret_env", "empty"],
        ),
        (
            format!("[signing]\nsecret_file = {empty_file:?}\n{PROXY}"),
            &["signing.secret_file", "empty"],
        ),
        (
            format!("[signing]\nsecret_file = \"/nonexistent/secret\"\n{PROXY}"),
            &["signing.secret_file", "cannot read"],
        ),
        (
            format!("[signing]\nsecret = \"abc\"\n{PROXY}"),
            &["signing.secret", "never read from the config file"],
        ),
        (
            format!("{SIGNING}{PROXY}secret = \"abc\"\n"),
            &["route `images`: `secret`", "never read"],
        ),
        (
            format!("{SIGNING}ttl = \"soon\"\n{PROXY}"),
            &["signing.ttl", "duration", "soon"],
        ),
        (
            format!("{SIGNING}{PROXY}bucket = \"0s\"\n"),
            &["route `images`: `bucket`", "zero"],
        ),
        (
            format!("{SIGNING}cache_size = 0\n{PROXY}"),
            &["signing.cache_size", "at least 1"],
        ),
        (
            format!("{SIGNING}{PROXY}max_size = \"1XB\"\n"),
            &["route `images`: `max_size`", "1XB"],
        ),
        (
            format!("{SIGNING}{PROXY}min_size = \"2MB\"\nmax_size = \"1MB\"\n"),
            &["`min_size`", "larger than `max_size`"],
        ),
        (
            format!("{SIGNING}{PROXY}{}", PROXY.replace("/img/", "/other/")),
            &["route `images`: `name`", "another route"],
        ),
        (
            format!("{SIGNING}{PROXY}{}", PROXY.replace("\"images\"", "\"two\"")),
            &["route `two`: `prefix`", "\"/img/\"", "another route"],
        ),
        (
            format!(
                "{SIGNING}{}",
                PROXY.replace("https://cdn.filestackcontent.com", "cdn.local/x")
            ),
            &[
                "route `images`: `upstream`",
                "absolute http(s) URL",
                "cdn.local/x",
            ],
        ),
        (
            format!(
                "{SIGNING}{}",
                PROXY.replace("https://cdn.filestackcontent.com", "ftp://cdn.local")
            ),
            &["`upstream`", "http(s)"],
        ),
        (
            format!("{SIGNING}{PROXY}calls = [\"read\", \"reed\"]\n"),
            &["route `images`: `calls`", "reed"],
        ),
        (
            format!("{SIGNING}{PROXY}calls = []\n"),
            &["`calls`", "at least one"],
        ),
        (
            format!("{SIGNING}{}", PROXY.replace("\"proxy\"", "\"proxi\"")),
            &["route `images`: `mode`", "proxi"],
        ),
        (
            format!(
                "{SIGNING}{}",
                PROXY.replace("upstream = \"https://cdn.filestackcontent.com\"\n", "")
            ),
            &["route `images`: `upstream`", "required for proxy"],
        ),
        (
            format!("{SIGNING}{}", PROXY.replace("\"/img/\"", "\"img/\"")),
            &["route `images`: `prefix`", "start with '/'"],
        ),
        (
            format!("{SIGNING}{PROXY}rewrite_hosts = [\"a.com\"]\n"),
            &["`rewrite_hosts`", "only applies to site"],
        ),
        (
            format!("{SIGNING}{PROXY}url_style = \"fragment\"\n"),
            &["url_style", "fragment"],
        ),
        (
            format!("[server]\nlisten = \"localhost\"\n{SIGNING}{PROXY}"),
            &["server.listen", "localhost"],
        ),
        (SIGNING.to_owned(), &["route", "no routes"]),
        (
            format!("[server]\nmax_header_bytes = \"1KB\"\n{SIGNING}{PROXY}"),
            &["server.max_header_bytes", "8KiB"],
        ),
        (
            format!("[server]\nsend_timeout = \"soon\"\n{SIGNING}{PROXY}"),
            &["server.send_timeout", "soon"],
        ),
        (
            format!("[server]\nworkers = 0\n{SIGNING}{PROXY}"),
            &["server.workers", "at least 1"],
        ),
        (
            format!("{SIGNING}{PROXY}max_request_body = \"1MB\"\n"),
            &["`max_request_body`", "only applies to site"],
        ),
        (
            format!("{SIGNING}{PROXY}cors_origins = [\"*\"]\n"),
            &["`cors_origins`", "only applies to upload-policy"],
        ),
        (
            format!("{SIGNING}{PROXY}max_upstream_connections = 0\n"),
            &["route `images`: `max_upstream_connections`", "at least 1"],
        ),
        (
            format!(
                "{SIGNING}[[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
                 upstream = \"https://cdn.filestackcontent.com\"\nmax_upstream_connections = 8\n"
            ),
            &[
                "`max_upstream_connections`",
                "only applies to proxy and site",
            ],
        ),
        (
            format!("{SIGNING}{PROXY}json_rewrite_limit = 5\n"),
            &["`json_rewrite_limit`", "only applies to site"],
        ),
        (
            format!("{SIGNING}{PROXY}connect_timeout = \"fast\"\n"),
            &["route `images`: `connect_timeout`", "fast"],
        ),
        (
            format!("[server]\nshutdown_grace = \"x\"\n{SIGNING}{PROXY}"),
            &["server.shutdown_grace", "duration"],
        ),
        (
            format!("[server]\nmax_connections = 0\n{SIGNING}{PROXY}"),
            &["server.max_connections", "at least 1"],
        ),
        (
            format!(
                "{SIGNING}{}",
                PROXY.replace("https://cdn.filestackcontent.com", "http://cdn.local")
            ) + "ca_file = \"/x.pem\"\n",
            &["`ca_file`", "https upstream"],
        ),
        (
            format!("{SIGNING}{PROXY}upstream = \"x\"\n"),
            &["upstream", "duplicate"],
        ),
        ("not toml [".to_owned(), &["TOML parse error"]),
    ];
    for (toml, words) in cases {
        let message = error_of(&toml);
        for word in words {
            assert!(
                message.contains(word),
                "{message:?} lacks {word:?} for:\n{toml}"
            );
        }
        assert!(
            !message.contains("test-secret"),
            "the secret leaked: {message}"
        );
    }
}

#[test]
fn load_names_the_file() {
    let mut secret = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(secret, "s3cret").expect("write");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let secret_path = secret.path().display().to_string();
    writeln!(
        file,
        "[signing]\nsecret_file = {secret_path:?}\n{PROXY}ttl = \"x\""
    )
    .expect("write");
    let message = Config::load(file.path()).expect_err("refused").to_string();
    assert!(
        message.starts_with(&file.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("route `images`: `ttl`"), "{message}");
    let missing = Config::load(std::path::Path::new("/nonexistent/gateway.toml"))
        .expect_err("refused")
        .to_string();
    assert!(
        missing.contains("cannot read /nonexistent/gateway.toml"),
        "{missing}"
    );
}

#[cfg(unix)]
#[test]
fn a_world_readable_secret_file_gives_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "s3cret").expect("write");
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let toml = format!(
        "[signing]\nsecret_file = {:?}\n{PROXY}",
        file.path().display().to_string()
    );
    let config = parse(&toml).expect("still valid");
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0].contains("`signing.secret_file`") && config.warnings[0].contains("644")
    );
    assert!(!config.warnings[0].contains("s3cret"));
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(parse(&toml).expect("valid").warnings.is_empty());
}

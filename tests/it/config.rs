//! `gateway.toml` parsing: the repository's own file, defaults, and a message naming the key for
//! every kind of mistake.

use std::io::Write;
use std::time::Duration;

use signgate::config::{Config, ConfigError, Mode, RouteKind};
use signgate::filelink::UrlStyle;
use signgate::policy::Call;
use signgate::tasks::TaskAllowlist;

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
const UPLOAD: &str = "[[route]]\nname = \"upload\"\nprefix = \"/up\"\nmode = \"upload-policy\"\n";
const PROXY: &str = "[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"https://cdn.filestackcontent.com\"\n";

#[test]
fn the_repository_gateway_toml_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"))
        .expect("gateway.toml is in the repository");
    let config = parse(&text).expect("gateway.toml is valid");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["images", "links", "upload", "site"]);
    let upload = config.route("upload").expect("upload route");
    assert_eq!(upload.mode(), Mode::UploadPolicy);
    assert_eq!(upload.policy.limits.max_size, Some(1_000_000));
    assert_eq!(upload.policy.limits.path.as_deref(), Some("^/gallery/"));
    let images = config.route("images").expect("images route");
    assert_eq!(images.policy.calls, [Call::Read, Call::Convert]);
    assert_eq!(images.signing.ttl, Duration::from_secs(3600));
    assert_eq!(images.signing.bucket, Duration::from_secs(300));
    assert_eq!(config.log.format, signgate::config::LogFormat::Text);
}

#[test]
fn log_format_is_text_unless_the_file_says_json() {
    use signgate::config::LogFormat;
    let json = parse(&format!("[log]\nformat = \"json\"\n{SIGNING}{PROXY}")).expect("valid");
    assert_eq!(json.log.format, LogFormat::Json);
    let text = parse(&format!("[log]\n{SIGNING}{PROXY}")).expect("valid");
    assert_eq!(text.log.format, LogFormat::Text);
}

#[test]
fn defaults_fill_what_is_not_set() {
    let config = parse(&format!("{SIGNING}{PROXY}")).expect("valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    let route = &config.routes[0];
    assert_eq!(route.policy.calls, [Call::Read]);
    assert_eq!(route.signing.ttl, Duration::from_secs(3600));
    assert_eq!(route.signing.bucket, Duration::from_secs(300));
    assert_eq!(route.signing.cache_size.get(), 100_000);
    assert_eq!(route.signing.url_style, UrlStyle::Query);
    let site = parse(&format!(
        "{SIGNING}[[route]]\nname = \"s\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://127.0.0.1:3000\"\n"
    ))
    .expect("valid");
    assert_eq!(site.routes[0].policy.calls, [Call::Read, Call::Convert]);
    let RouteKind::Site(site_route) = &site.routes[0].kind else {
        panic!("a site route")
    };
    assert_eq!(site_route.rewrite.hosts, ["cdn.filestackcontent.com"]);
    assert_eq!(site_route.rewrite.rewrite_limit, 64 * 1024 * 1024);
    assert_eq!(site_route.max_request_body, 10 * 1024 * 1024);
    assert_eq!(site_route.fetch.max_connections.get(), 1024);
    assert_eq!(site_route.fetch.timeouts.response, Duration::from_secs(30));
    let upload = parse(&format!(
        "{SIGNING}[[route]]\nname = \"u\"\nprefix = \"/p\"\nmode = \"upload-policy\"\n"
    ))
    .expect("valid");
    assert_eq!(upload.routes[0].policy.calls, [Call::Pick, Call::Store]);
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
fn the_retired_json_keys_still_load() {
    let config = parse(&format!(
        "[server]\njson_hold_budget = \"64MiB\"\n{SIGNING}[[route]]\nname = \"s\"\nprefix = \"/\"\n\
         mode = \"site\"\nupstream = \"http://127.0.0.1:3000\"\njson_rewrite_limit = \"1MiB\"\n"
    ))
    .expect("accepted, and ignored");
    assert_eq!(config.routes[0].mode(), Mode::Site);
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
            &["signing.secret_file", "/nonexistent/secret does not exist"],
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
            format!("{SIGNING}{UPLOAD}max_size = \"1XB\"\n"),
            &["route `upload`: `max_size`", "1XB", "\"512KB\""],
        ),
        (
            format!("{SIGNING}{UPLOAD}max_size = -5\n"),
            &[
                "max_size",
                "must not be negative",
                "bytes as a whole number",
            ],
        ),
        (
            format!("{SIGNING}{PROXY}max_size = \"1MB\"\n"),
            &[
                "route `images`: `max_size`",
                "does not apply to proxy routes",
                "it is for upload-policy routes",
            ],
        ),
        (
            format!("{SIGNING}{PROXY}cache_sise = 5\n"),
            &["unknown field `cache_sise`", "cache_size"],
        ),
        (
            format!("{SIGNING}{UPLOAD}min_size = \"2MB\"\nmax_size = \"1MB\"\n"),
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
            &[
                "`rewrite_hosts`",
                "does not apply to proxy routes",
                "it is for site routes",
            ],
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
            format!("[log]\nformat = \"xml\"\n{SIGNING}{PROXY}"),
            &["format = \"xml\"", "`text` or `json`"],
        ),
        (
            format!("[log]\nlevel = \"debug\"\n{SIGNING}{PROXY}"),
            &["level"],
        ),
        (
            format!("{SIGNING}{PROXY}max_request_body = \"1MB\"\n"),
            &["`max_request_body`", "it is for site routes"],
        ),
        (
            format!("{SIGNING}{PROXY}reflection_guard = false\n"),
            &["`reflection_guard`", "it is for site routes"],
        ),
        (
            format!("{SIGNING}{PROXY}inline_types = [\"image/*\"]\n"),
            &["`inline_types`", "image/png", "no wildcards"],
        ),
        (
            format!(
                "[signing]\nsecret_env = \"FILESTACK_SECRET\"\nttl = \"1s\"\nbucket = \"10y\"\n{PROXY}"
            ),
            &["`signing.bucket`", "at most 86400s"],
        ),
        (
            format!(
                "[signing]\nsecret_env = \"FILESTACK_SECRET\"\nttl = \"500000000000y\"\n{PROXY}"
            ),
            &["`signing.ttl`"],
        ),
        (
            format!("{SIGNING}{PROXY}ttl = \"10m\"\nbucket = \"15m\"\n"),
            &["route `images`: `bucket`", "longer than `ttl`"],
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
                "does not apply to redirect routes",
                "it is for proxy, site and verify routes",
            ],
        ),
        (
            format!(
                "{SIGNING}[[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
                 upstream = \"https://cdn.filestackcontent.com\"\nresponse_timeout = \"5s\"\n"
            ),
            &[
                "route `go`: `response_timeout`",
                "does not apply to redirect routes",
            ],
        ),
        (
            format!(
                "{SIGNING}[[route]]\nname = \"u\"\nprefix = \"/u\"\nmode = \"upload-policy\"\n\
                 connect_timeout = \"5s\"\n"
            ),
            &[
                "route `u`: `connect_timeout`",
                "does not apply to upload-policy routes",
            ],
        ),
        (
            format!("{SIGNING}{PROXY}json_rewrite_limit = 5\n"),
            &["`json_rewrite_limit`", "it is for site routes"],
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
        (
            format!("{SIGNING}{PROXY}tasks = [\"resize\", \"resise\"]\n"),
            &[
                "route `images`: `tasks`",
                "unknown task \"resise\"",
                "\"resize\"",
            ],
        ),
        (
            format!("{SIGNING}{PROXY}authorize_url = \"/authz\"\n"),
            &["`authorize_url`", "absolute http(s) URL", "\"/authz\""],
        ),
        (
            format!("{SIGNING}{PROXY}authorize_cache = \"30s\"\n"),
            &["`authorize_cache`", "only applies with `authorize_url`"],
        ),
        (
            format!(
                "{SIGNING}{PROXY}authorize_url = \"http://a.example/\"\nauthorize_timeout = \"0s\"\n"
            ),
            &["`authorize_timeout`", "longer than zero"],
        ),
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

#[cfg(unix)]
#[test]
fn a_next_secret_file_is_watched_and_warned_about_like_the_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let (current, next) = (dir.path().join("current"), dir.path().join("next"));
    std::fs::write(&current, "s3cret").expect("write");
    std::fs::write(&next, "n3xt").expect("write");
    std::fs::set_permissions(&current, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    let toml = format!(
        "[signing]\nsecret_file = {:?}\nsecret_next_file = {:?}\n{PROXY}",
        current.display().to_string(),
        next.display().to_string()
    );
    let config = parse(&toml).expect("valid");
    assert_eq!(config.secret_files, [current, next]);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("`signing.secret_next_file`"));
    assert!(!config.warnings[0].contains("n3xt"));
}

#[test]
fn the_unknown_key_list_never_offers_secret() {
    let message = error_of(&format!("{SIGNING}{PROXY}cache_sise = 5\n"));
    assert!(!message.contains("`secret`"), "{message}");
    let message = error_of(&format!("[signing]\nsecret_envv = \"X\"\n{PROXY}"));
    assert!(message.contains("secret_env"), "{message}");
    assert!(!message.contains("`secret`,"), "{message}");
}

/// Each key that belongs to some modes only, with a valid value, and the modes that take it.
const MODE_KEYS: [(&str, &str, &[&str]); 26] = [
    (
        "upstream",
        "\"https://cdn.example.com\"",
        &["proxy", "redirect", "site", "verify"],
    ),
    ("connect_timeout", "\"5s\"", &["proxy", "site", "verify"]),
    ("response_timeout", "\"5s\"", &["proxy", "site", "verify"]),
    ("body_idle_timeout", "\"5s\"", &["proxy", "site", "verify"]),
    (
        "ca_file",
        "\"/etc/ssl/certs/ca-certificates.crt\"",
        &["proxy", "site", "verify"],
    ),
    (
        "max_upstream_connections",
        "8",
        &["proxy", "site", "verify"],
    ),
    ("rewrite_hosts", "[\"cdn.example.com\"]", &["site"]),
    ("json_rewrite_limit", "\"1MB\"", &["site"]),
    ("max_request_body", "\"1MB\"", &["site"]),
    (
        "cors_origins",
        "[\"*\"]",
        &["proxy", "upload-policy", "verify"],
    ),
    ("inline_types", "[\"image/png\"]", &["proxy", "verify"]),
    ("keep_http", "true", &["site"]),
    ("rewrite_limit", "\"8MiB\"", &["site"]),
    ("reflection_guard", "false", &["site"]),
    ("compress", "false", &["site"]),
    ("max_size", "\"1MB\"", &["upload-policy"]),
    ("min_size", "10", &["upload-policy"]),
    ("path", "\"^/gallery/\"", &["upload-policy"]),
    ("container", "\"photos\"", &["upload-policy"]),
    (
        "tasks",
        "[\"resize\"]",
        &["proxy", "redirect", "site", "verify"],
    ),
    (
        "authorize_url",
        "\"http://127.0.0.1:3000/authz\"",
        &["proxy", "redirect", "upload-policy"],
    ),
    (
        "calls",
        "[\"read\"]",
        &["proxy", "redirect", "site", "upload-policy"],
    ),
    (
        "url",
        "\"^https://\"",
        &["proxy", "redirect", "site", "upload-policy"],
    ),
    ("expired_status", "410", &["verify"]),
    ("expiry_grace", "\"5s\"", &["verify"]),
    ("origin_container", "\"photos\"", &["verify"]),
];

#[test]
fn a_key_is_taken_by_the_modes_it_belongs_to_and_refused_by_name_elsewhere() {
    for mode in ["proxy", "redirect", "site", "upload-policy", "verify"] {
        for (key, value, modes) in MODE_KEYS {
            // Every mode but upload-policy needs an upstream; https so that ca_file applies.
            let upstream = if mode == "upload-policy" || key == "upstream" {
                String::new()
            } else {
                "upstream = \"https://cdn.example.com\"\n".to_owned()
            };
            let toml = format!(
                "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"/r/\"\nmode = \"{mode}\"\n{upstream}{key} = {value}\n"
            );
            let result = parse(&toml);
            if modes.contains(&mode) {
                assert!(result.is_ok(), "{mode} refused {key}: {:?}", result.err());
            } else {
                let message = result.expect_err(&format!("{mode} took {key}")).to_string();
                let expected = format!("route `r`: `{key}`: does not apply to {mode} routes");
                assert!(message.contains(&expected), "{message}");
            }
        }
    }
}

#[test]
fn a_secret_not_available_here_is_a_warning_when_only_checking() {
    use signgate::config::SecretsNeeded;
    let toml = format!("[signing]\nsecret_env = \"NOT_SET_HERE\"\n{PROXY}");
    let strict = Config::parse(&toml, &env, SecretsNeeded::Required).expect_err("refused");
    assert!(
        strict.to_string().contains("NOT_SET_HERE is not set"),
        "{strict}"
    );
    let checked = Config::parse(&toml, &env, SecretsNeeded::Optional).expect("checked");
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    assert!(
        checked.warnings[0]
            .contains("`signing.secret_env`: environment variable NOT_SET_HERE is not set")
    );
    assert!(checked.routes[0].signing.secret.is_placeholder());
    // An empty secret, or a mistake elsewhere, is still an error.
    let empty = format!("[signing]\nsecret_env = \"EMPTY_SECRET\"\n{PROXY}");
    assert!(Config::parse(&empty, &env, SecretsNeeded::Optional).is_err());
    let typo = format!("[signing]\nsecret_env = \"NOT_SET_HERE\"\n{PROXY}ttl = \"x\"\n");
    assert!(Config::parse(&typo, &env, SecretsNeeded::Optional).is_err());
}

#[test]
fn the_readme_shows_the_repository_gateway_toml_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let gateway = std::fs::read_to_string(format!("{root}/gateway.toml")).expect("gateway.toml");
    let shown = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a toml block");
    assert_eq!(
        shown, gateway,
        "README's first toml block and gateway.toml differ"
    );
}

#[test]
fn who_may_get_a_signature_defaults_to_anyone_and_read_only_tasks() {
    let config = parse(&format!("{SIGNING}{PROXY}")).expect("valid");
    let route = &config.routes[0];
    assert!(route.authorize.is_none());
    assert_eq!(route.tasks, TaskAllowlist::default());
    assert!(route.tasks.allows("resize=width:300") && !route.tasks.allows("store"));

    let asked = parse(&format!(
        "{SIGNING}{PROXY}authorize_url = \"http://127.0.0.1:3000/authz?app=1\"\ntasks = [\"store\"]\n"
    ))
    .expect("valid");
    let route = &asked.routes[0];
    let authorize = route.authorize.as_ref().expect("authorize_url set");
    assert_eq!(authorize.url, "http://127.0.0.1:3000/authz?app=1");
    assert_eq!(authorize.timeout, Duration::from_secs(2));
    assert_eq!(authorize.cache, Duration::ZERO);
    assert_eq!(route.tasks.names(), ["store"]);

    let tuned = parse(&format!(
        "{SIGNING}{UPLOAD}authorize_url = \"https://auth.example/\"\nauthorize_timeout = \"500ms\"\nauthorize_cache = \"30s\"\n"
    ))
    .expect("valid");
    let authorize = tuned.routes[0]
        .authorize
        .as_ref()
        .expect("authorize_url set");
    assert_eq!(authorize.timeout, Duration::from_millis(500));
    assert_eq!(authorize.cache, Duration::from_secs(30));
}

const VERIFY: &str = "[[route]]\nname = \"files\"\nprefix = \"/files/\"\nmode = \"verify\"\nupstream = \"http://127.0.0.1:9000/bucket\"\n";

#[test]
fn a_verify_route_answers_expired_with_403_takes_no_grace_and_passes_no_task_by_default() {
    let config = parse(&format!("{SIGNING}{VERIFY}")).expect("valid");
    let route = &config.routes[0];
    assert_eq!(route.mode(), Mode::Verify);
    let RouteKind::Verify(verify) = &route.kind else {
        panic!("a verify route");
    };
    assert_eq!(verify.checks.expired_status, http::StatusCode::FORBIDDEN);
    assert_eq!(verify.checks.expiry_grace, Duration::ZERO);
    assert_eq!(verify.checks.origin_container, None);
    assert_eq!(verify.fetch.upstream.base(), "http://127.0.0.1:9000/bucket");
    assert!(route.tasks.names().is_empty());
    let set = parse(&format!(
        "{SIGNING}{VERIFY}expired_status = 410\nexpiry_grace = \"5m\"\norigin_container = \"photos\"\ntasks = [\"resize\"]\n"
    ))
    .expect("valid");
    let RouteKind::Verify(verify) = &set.routes[0].kind else {
        panic!("a verify route");
    };
    assert_eq!(verify.checks.expired_status, http::StatusCode::GONE);
    assert_eq!(verify.checks.expiry_grace, Duration::from_secs(300));
    assert_eq!(verify.checks.origin_container.as_deref(), Some("photos"));
    assert_eq!(set.routes[0].tasks.names(), ["resize"]);
}

#[test]
fn bad_verify_keys_are_refused_naming_the_key_and_the_reason() {
    for (extra, expected) in [
        (
            "expired_status = 302",
            "route `files`: `expired_status`: must be a 4xx status such as 403 (the CDN's), 401 or 410, got 302",
        ),
        (
            "expired_status = 1000",
            "route `files`: `expired_status`: must be a 4xx status",
        ),
        (
            "expiry_grace = \"6m\"",
            "route `files`: `expiry_grace`: 360s is longer than 300s",
        ),
        ("expiry_grace = \"soon\"", "route `files`: `expiry_grace`:"),
        (
            "origin_container = \"\"",
            "route `files`: `origin_container`: must name the container",
        ),
        (
            "tasks = [\"resise\"]",
            "route `files`: `tasks`: unknown task",
        ),
        (
            "calls = [\"read\"]",
            "route `files`: `calls`: does not apply to verify routes",
        ),
    ] {
        let error = error_of(&format!("{SIGNING}{VERIFY}{extra}\n"));
        assert!(error.contains(expected), "{extra}: {error}");
    }
    let error = error_of(&format!(
        "{SIGNING}[[route]]\nname = \"files\"\nprefix = \"/f/\"\nmode = \"verify\"\n"
    ));
    assert!(
        error.contains("route `files`: `upstream`: is required for verify routes"),
        "{error}"
    );
}

#[test]
fn each_scheme_names_the_keys_it_needs_and_refuses_the_others() {
    let route = |keys: &str| {
        format!(
            "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
             upstream = \"https://bucket.s3.eu-west-1.amazonaws.com\"\n{keys}\n"
        )
    };
    let config = parse(&route(
        "scheme = \"s3\"\naccess_key_id = \"AKIA\"\nregion = \"eu-west-1\"",
    ))
    .expect("valid");
    assert_eq!(config.routes[0].scheme.name(), "s3");
    assert_eq!(
        parse(&route("")).expect("valid").routes[0].scheme.name(),
        "filestack"
    );
    for (keys, expected) in [
        (
            "scheme = \"gcs\"",
            "route `r`: `scheme`: must be one of filestack, s3, cloudfront, imgix, akamai",
        ),
        (
            "scheme = \"s3\"\nregion = \"eu-west-1\"",
            "route `r`: `access_key_id`: is required with scheme = \"s3\"",
        ),
        (
            "scheme = \"s3\"\naccess_key_id = \"A\"",
            "route `r`: `region`: is required",
        ),
        (
            "region = \"eu-west-1\"",
            "route `r`: `region`: is for scheme = \"s3\" routes",
        ),
        (
            "scheme = \"imgix\"\nkey_pair_id = \"K\"",
            "route `r`: `key_pair_id`: is for scheme = \"cloudfront\"",
        ),
        (
            "scheme = \"imgix\"\ncalls = [\"read\"]",
            "route `r`: `calls`: is Filestack's",
        ),
        (
            "scheme = \"cloudfront\"\nkey_pair_id = \"K\"",
            "`signing.secret_file`: scheme = \"cloudfront\" reads its private key from a PEM file",
        ),
        (
            "scheme = \"akamai\"\ntoken_algorithm = \"sha512\"",
            "route `r`: `token_algorithm`: must be sha256, sha1 or md5",
        ),
        (
            "scheme = \"akamai\"",
            "scheme = \"akamai\" needs the token key in hex",
        ),
    ] {
        let message = error_of(&route(keys));
        assert!(message.contains(expected), "{keys}: {message}");
    }
    let upload = format!(
        "{SIGNING}[[route]]\nname = \"u\"\nprefix = \"/u\"\nmode = \"upload-policy\"\nscheme = \"s3\"\n"
    );
    assert!(error_of(&upload).contains("speak Filestack's policies only"));
}

#[test]
fn an_akamai_token_cookie_is_for_redirect_routes_under_the_upstreams_domain() {
    use signgate::config::{RedirectRoute, TokenCookie};
    let env = |name: &str| match name {
        "FILESTACK_SECRET" => Some("test-secret".to_owned()),
        "AKAMAI_KEY" => Some("a7b3c1d9e5f20486172a3b4c5d6e7f80".to_owned()),
        _ => None,
    };
    let route = |mode: &str, upstream: &str, keys: &str| {
        format!(
            "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"/v/\"\nmode = \"{mode}\"\n\
             upstream = \"{upstream}\"\nsecret_env = \"AKAMAI_KEY\"\n{keys}\n"
        )
    };
    let cookie = |upstream: &str, keys: &str| {
        let config = Config::from_toml_str(&route("redirect", upstream, keys), env)
            .unwrap_or_else(|e| panic!("{keys}: {e}"));
        match &config.routes[0].kind {
            RouteKind::Redirect(RedirectRoute { token_cookie, .. }) => token_cookie.clone(),
            _ => panic!("a redirect route"),
        }
    };
    let akamai = "scheme = \"akamai\"\n";
    assert_eq!(
        cookie(
            "https://media.example.com",
            &format!("{akamai}token_cookie_domain = \".Example.COM\"")
        ),
        Some(TokenCookie {
            name: "hdnts".into(),
            domain: "example.com".into(),
            secure: true
        })
    );
    assert_eq!(
        cookie(
            "http://127.0.0.1:9000",
            &format!("{akamai}token_name = \"__token__\"\ntoken_cookie_domain = \"127.0.0.1\"")
        ),
        Some(TokenCookie {
            name: "__token__".into(),
            domain: "127.0.0.1".into(),
            secure: false
        })
    );
    assert_eq!(cookie("https://media.example.com", akamai), None);

    let error = |mode: &str, upstream: &str, keys: &str| match Config::from_toml_str(
        &route(mode, upstream, keys),
        env,
    ) {
        Ok(_) => panic!("{mode} accepted: {keys}"),
        Err(e) => e.to_string(),
    };
    let media = "https://media.example.com";
    let key = "route `r`: `token_cookie_domain`: ";
    let domain = |text: &str| format!("{akamai}token_cookie_domain = {text:?}");
    for (mode, upstream, keys, expected) in [
        (
            "redirect",
            media,
            "scheme = \"s3\"\naccess_key_id = \"A\"\nregion = \"r\"\ntoken_cookie_domain = \"example.com\"".to_owned(),
            "is for scheme = \"akamai\" routes, and this route's scheme is \"s3\"",
        ),
        (
            "redirect",
            media,
            "token_cookie_domain = \"example.com\"".to_owned(),
            "is for scheme = \"akamai\" routes, and this route's scheme is \"filestack\"",
        ),
        (
            "proxy",
            media,
            domain("example.com"),
            "is for redirect routes, the only ones that hand a browser a URL to follow (the \
             cookie goes out with the 307); a proxy route fetches the object itself",
        ),
        (
            "site",
            "http://127.0.0.1:3000",
            domain("example.com"),
            "is for redirect routes, the only ones that hand a browser a URL to follow (the \
             cookie goes out with the 307); a site route's pages carry signed URLs",
        ),
        ("redirect", media, domain(""), "must be a domain name such as"),
        ("redirect", media, domain("example..com"), "must be a domain name"),
        ("redirect", media, domain("example.com."), "must be a domain name"),
        ("redirect", media, domain("*.example.com"), "must be a domain name"),
        ("redirect", media, domain("example.com/v"), "must be a domain name"),
        ("redirect", media, domain("exa mple.com"), "must be a domain name"),
        (
            "redirect",
            media,
            domain("other.com"),
            "\"other.com\" does not cover the upstream's host \"media.example.com\": a browser \
             sends the cookie only to that domain and the hosts under it",
        ),
        ("redirect", media, domain("ample.com"), "\"ample.com\" does not cover"),
        ("redirect", media, domain("cdn.media.example.com"), "\"cdn.media.example.com\" does not cover"),
        ("redirect", "http://127.0.0.1:9000", domain("0.0.1"), "\"0.0.1\" does not cover"),
    ] {
        let message = error(mode, upstream, &keys);
        assert!(message.contains(&format!("{key}{expected}")), "{keys}: {message}");
    }
    for mode in ["verify", "upload-policy"] {
        let toml = format!(
            "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"/v/\"\nmode = \"{mode}\"\n\
             token_cookie_domain = \"example.com\"\n"
        );
        let message = error_of(&toml);
        assert!(
            message.contains(&format!(
                "{key}does not apply to {mode} routes; it is for redirect routes"
            )),
            "{message}"
        );
    }
    // A [[route.cdn]] entry signs URLs in pages: it has no such key.
    let entry = format!(
        "{SIGNING}[[route]]\nname = \"g\"\nprefix = \"/\"\nmode = \"site\"\n\
         upstream = \"http://127.0.0.1:3000\"\n[[route.cdn]]\nhosts = [\"media.example.com\"]\n\
         scheme = \"akamai\"\nsecret_env = \"AKAMAI_KEY\"\ntoken_cookie_domain = \"example.com\"\n"
    );
    let message = match Config::from_toml_str(&entry, env) {
        Ok(_) => panic!("a cdn entry took token_cookie_domain"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("token_cookie_domain"), "{message}");
}

#[test]
fn a_site_routes_cdn_entries_sign_their_hosts_with_their_own_scheme_and_key() {
    let env = |name: &str| match name {
        "FILESTACK_SECRET" => Some("test-secret".to_owned()),
        "S3_KEY" => Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
        "AKAMAI_KEY" => Some("a7b3c1d9e5f20486172a3b4c5d6e7f80".to_owned()),
        _ => None,
    };
    let site = |entries: &str| {
        format!(
            "{SIGNING}[[route]]\nname = \"gallery\"\nprefix = \"/\"\nmode = \"site\"\n\
             upstream = \"http://127.0.0.1:3000\"\nttl = \"2h\"\n{entries}"
        )
    };
    let s3 = "[[route.cdn]]\nhosts = [\"Photos.S3.eu-west-1.amazonaws.com\"]\nscheme = \"s3\"\n\
              access_key_id = \"AKIA\"\nregion = \"eu-west-1\"\nsecret_env = \"S3_KEY\"\n";
    let config = Config::from_toml_str(
        &site(&format!(
            "{s3}[[route.cdn]]\nhosts = [\"media.example.net\"]\nscheme = \"akamai\"\n\
             secret_env = \"AKAMAI_KEY\"\nttl = \"10m\"\n"
        )),
        env,
    )
    .expect("valid");
    let RouteKind::Site(site_route) = &config.routes[0].kind else {
        panic!("a site route")
    };
    let cdns = &site_route.rewrite.cdns;
    assert_eq!(cdns.len(), 2);
    assert_eq!(cdns[0].hosts, ["photos.s3.eu-west-1.amazonaws.com"]);
    assert_eq!(cdns[0].scheme.name(), "s3");
    assert_eq!(
        cdns[0].signing.ttl,
        Duration::from_secs(7200),
        "the route's ttl"
    );
    assert_eq!(cdns[1].scheme.name(), "akamai");
    assert_eq!(cdns[1].signing.ttl, Duration::from_secs(600), "its own ttl");
    assert_eq!(
        site_route.rewrite.all_hosts().collect::<Vec<_>>(),
        [
            "cdn.filestackcontent.com",
            "photos.s3.eu-west-1.amazonaws.com",
            "media.example.net"
        ]
    );

    let error = |entries: &str| match Config::from_toml_str(&site(entries), env) {
        Ok(_) => panic!("accepted: {entries}"),
        Err(e) => e.to_string(),
    };
    for (entries, expected) in [
        (
            "[[route.cdn]]\nscheme = \"s3\"\n".to_owned(),
            "route `gallery`: [[route.cdn]] #1: needs `hosts`",
        ),
        (
            "[[route.cdn]]\nhosts = [\"a.example\"]\nsecret_env = \"S3_KEY\"\n".to_owned(),
            "route `gallery`, [[route.cdn]] `a.example`: `scheme`: is required in [[route.cdn]]",
        ),
        (
            "[[route.cdn]]\nhosts = [\"a.example\"]\nscheme = \"filestack\"\n".to_owned(),
            "[[route.cdn]] is for another scheme",
        ),
        (
            "[[route.cdn]]\nhosts = [\"a.example\"]\nscheme = \"imgix\"\n".to_owned(),
            "`secret_env`: each [[route.cdn]] signs with its own key",
        ),
        (
            "[[route.cdn]]\nhosts = [\"cdn.filestackcontent.com\"]\nscheme = \"imgix\"\n\
             secret_env = \"S3_KEY\"\n"
                .to_owned(),
            "`hosts`: \"cdn.filestackcontent.com\" is already signed",
        ),
        (
            format!("{s3}{s3}"),
            "`hosts`: \"photos.s3.eu-west-1.amazonaws.com\" is already signed",
        ),
        // The same host by another spelling: a trailing dot, a default port.
        (
            "[[route.cdn]]\nhosts = [\"cdn.filestackcontent.com.\"]\nscheme = \"imgix\"\n\
             secret_env = \"S3_KEY\"\n"
                .to_owned(),
            "`hosts`: \"cdn.filestackcontent.com.\" is already signed",
        ),
        (
            "[[route.cdn]]\nhosts = [\"cdn.filestackcontent.com:443\"]\nscheme = \"imgix\"\n\
             secret_env = \"S3_KEY\"\n"
                .to_owned(),
            "`hosts`: \"cdn.filestackcontent.com:443\" is already signed",
        ),
        (
            format!(
                "{s3}{}",
                s3.replace(
                    "Photos.S3.eu-west-1.amazonaws.com",
                    "photos.s3.eu-west-1.amazonaws.com.:80"
                )
            ),
            "`hosts`: \"photos.s3.eu-west-1.amazonaws.com.:80\" is already signed",
        ),
        (
            s3.replace("region = \"eu-west-1\"\n", ""),
            "route `gallery`, [[route.cdn]] `photos.s3.eu-west-1.amazonaws.com`: `region`: is \
             required",
        ),
        (
            format!("{s3}ttl = \"7d\"\n"),
            "`ttl`: with scheme = \"s3\", ttl + bucket + skew_margin",
        ),
        (
            format!("{s3}secret_next_env = \"S3_KEY\"\n"),
            "`secret_next_env`: rotates a Filestack secret",
        ),
        (
            format!("{s3}token_name = \"t\"\n"),
            "`token_name`: is for scheme = \"akamai\"",
        ),
        (
            "[[route.cdn]]\nhosts = [\"a.example\"]\nscheme = \"imgix\"\nprefix = \"/x\"\n"
                .to_owned(),
            "unknown field `prefix`",
        ),
    ] {
        let message = error(&entries);
        assert!(message.contains(expected), "{entries}\n{message}");
    }
    let proxy_with_entry = format!(
        "{SIGNING}{PROXY}[[route.cdn]]\nhosts = [\"a.example\"]\nscheme = \"imgix\"\n\
         secret_env = \"S3_KEY\"\n"
    );
    let message = match Config::from_toml_str(&proxy_with_entry, env) {
        Ok(_) => panic!("accepted on a proxy route"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("route `images`: `cdn`: does not apply to proxy routes"),
        "{message}"
    );
}

#[test]
fn a_scheme_route_refuses_rotation_keys_that_would_not_rotate_its_key() {
    let env = |name: &str| match name {
        "FILESTACK_SECRET" | "NEXT" => Some("test-secret".to_owned()),
        "KEY" => Some("Xz9Qm2Lp7Rt4Vw8K".to_owned()),
        _ => None,
    };
    let imgix = "[[route]]\nname = \"r\"\nprefix = \"/i/\"\nmode = \"redirect\"\n\
                 upstream = \"https://example.imgix.net\"\nscheme = \"imgix\"\n";
    let own = format!("{imgix}secret_env = \"KEY\"\nsecret_next_env = \"NEXT\"\n");
    let message = Config::from_toml_str(&own, env)
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains("route `r`: `secret_next_env`: rotates a Filestack secret"),
        "{message}"
    );
    assert!(
        message.contains("its own key: rotate it") && !message.contains("  "),
        "one line, one space between words: {message}"
    );
    let inherited = format!("[signing]\nsecret_env = \"KEY\"\nsecret_next_env = \"NEXT\"\n{imgix}");
    let message = Config::from_toml_str(&inherited, env)
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains("`signing.secret_next_env`: rotates a Filestack secret")
            && message.contains("give this route its own"),
        "{message}"
    );
    // Rotation of [signing]'s secret is fine beside a scheme route with its own key.
    let beside = format!(
        "[signing]\nsecret_env = \"FILESTACK_SECRET\"\nsecret_next_env = \"NEXT\"\n{imgix}\
         secret_env = \"KEY\"\n"
    );
    Config::from_toml_str(&beside, env).expect("valid");
}

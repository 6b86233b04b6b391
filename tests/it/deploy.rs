//! deploy/ against the gateway itself: the configs it ships pass `signgate check` and serve;
//! under `signgate run` the pods' config reloads through its pid file, refuses what needs a
//! restart and drains on SIGTERM; every metric the Grafana dashboard and the alert rules read is
//! one the gateway exports, and the dashboard shows every one; the pod, the unit and the image
//! give signgate the time, the descriptors, the ports and the paths its config asks for; and
//! `signgate health`, the image's HEALTHCHECK, tells a serving gateway from one that is not.
//!
//! `deploy/validate` checks the same files against Kubernetes' schemas, hadolint, promtool and
//! systemd-analyze.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use signgate::config::{Config, SecretsNeeded};

use crate::admin::{scrape_after, value};
use crate::support::process::GatewayProcess;
use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A file under deploy/.
fn deploy_file(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/deploy/{path}")).expect(path)
}

/// The `gateway.toml` the ConfigMap holds: its `gateway.toml: |` block, unindented.
fn configmap_toml() -> String {
    let yaml = deploy_file("kubernetes/configmap.yaml");
    let mut toml = String::new();
    for line in yaml
        .lines()
        .skip_while(|line| line.trim() != "gateway.toml: |")
        .skip(1)
    {
        match line.strip_prefix("    ") {
            Some(text) => toml.push_str(text),
            None if line.is_empty() => {}
            None => break,
        }
        toml.push('\n');
    }
    toml
}

/// `text`, validated as `signgate check` does where the secret is not.
fn parse(text: &str) -> Config {
    Config::parse(text, &|_| None, SecretsNeeded::Optional).expect("a valid config")
}

/// `text` with each `(from, to)` replaced; fails when `from` is not there (the test is then out
/// of date with deploy/).
fn replaced(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from} not in the deploy config");
        text = text.replace(from, to);
    }
    text
}

/// The number after `key:` on the first line of `yaml` at or after the line holding `after`.
fn yaml_number(yaml: &str, after: &str, key: &str) -> u64 {
    yaml.lines()
        .skip_while(|line| !line.contains(after))
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split('#').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}: after {after}"))
}

/// The value of `Key=` in a systemd unit.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// Every `signgate_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("signgate_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn signgate(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the binary runs")
}

#[test]
fn the_configmap_holds_the_image_config_word_for_word() {
    assert_eq!(
        configmap_toml(),
        deploy_file("gateway.toml"),
        "deploy/kubernetes/configmap.yaml and deploy/gateway.toml differ"
    );
}

#[test]
fn the_shipped_configs_pass_signgate_check_and_strict_with_their_secret_in_place() {
    for path in ["gateway.toml", "systemd/gateway.toml"] {
        let text = deploy_file(path);
        let file = Path::new(ROOT).join("deploy").join(path);
        let out = signgate(&["check"], &file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{path}: {stderr}");
        // The secret is not on this machine: that is the one warning.
        for line in stderr.lines() {
            assert!(
                line.contains("secret_file") && line.contains("does not exist"),
                "{path}: {line}"
            );
        }

        let secret = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(secret.path(), SECRET).expect("write");
        let secret_file =
            toml::from_str::<toml::Table>(&text).expect("toml")["signing"]["secret_file"]
                .as_str()
                .expect("secret_file")
                .to_owned();
        let in_place = tempfile::NamedTempFile::new().expect("temp file");
        let with_secret = replaced(
            &text,
            &[(&secret_file, secret.path().to_str().expect("utf-8"))],
        );
        std::fs::write(in_place.path(), with_secret).expect("write");
        let strict = signgate(&["check", "--strict"], in_place.path());
        assert_eq!(
            strict.status.code(),
            Some(0),
            "{path}: {}",
            String::from_utf8_lossy(&strict.stderr)
        );
    }
}

#[tokio::test]
async fn the_deploy_config_serves_and_exports_every_metric_the_dashboard_and_alerts_read() {
    let cdn = two_file_cdn().await;
    let site = start_origin(Arc::new(|_, _| {
        respond(
            200,
            &[("content-type", "text/html")],
            format!("<img src=\"https://cdn.filestackcontent.com/{H2}\">"),
        )
    }))
    .await;
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), SECRET).expect("write");
    // The ConfigMap's config, on loopback ports of its own, in front of test upstreams.
    let toml = replaced(
        &configmap_toml(),
        &[
            ("\"0.0.0.0:8080\"", "\"127.0.0.1:0\""),
            ("\"0.0.0.0:9090\"", "\"127.0.0.1:0\""),
            (
                "\"https://cdn.filestackcontent.com\"",
                &format!("\"{}\"", cdn.url()),
            ),
            ("\"http://gallery:3000\"", &format!("\"http://{site}\"")),
            (
                "\"/run/secrets/signgate/filestack\"",
                &format!("{:?}", secret.path()),
            ),
            // A planned secret switch, so its countdown is exported too.
            (
                "[signing]\n",
                "[signing]\nswitch_at = \"2099-01-01T00:00:00Z\"\n",
            ),
            // The canary the config suggests, on: its series exist from the start.
            (
                "# canary_handle = \"AbCdEfGhIjKlMnOpQrSt\"",
                &format!("canary_handle = \"{H}\""),
            ),
        ],
    );
    // And a verify route (the ConfigMap has none), so that its metric is exported too.
    let toml = format!(
        "{toml}\n[[route]]\nname = \"files\"\nprefix = \"/files/\"\nmode = \"verify\"\n\
         upstream = \"{}\"\n",
        cdn.url()
    );
    let gateway = TestGateway::start(&toml).await;

    let image = get(&gateway.url(&format!("/img/{H}"))).await;
    assert_eq!(image.status, StatusCode::OK);
    assert_eq!(image.text(), "0123456789abcdefghij");
    let link = get(&gateway.url(&format!("/go/{H}"))).await;
    assert_eq!(link.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        get(&gateway.url("/upload-policy")).await.status,
        StatusCode::OK
    );
    let page = get(&gateway.url("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("signature="), "{}", page.text());

    let (scrape, text) = scrape_after(&gateway, 4.0).await;
    for (route, mode, class) in [
        ("images", "proxy", "2xx"),
        ("links", "redirect", "3xx"),
        ("upload", "upload-policy", "2xx"),
        ("site", "site", "2xx"),
    ] {
        let labels = [("route", route), ("mode", mode), ("status_class", class)];
        let counted = value(&scrape, "signgate_requests_total", &labels);
        assert_eq!(counted, 1.0, "{route}");
    }

    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let dashboard = deploy_file("grafana/signgate.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    // Queries name series exactly: the dashboard's, and the series promtool's alert tests feed
    // the rules (an alert reading another name would not fire there).
    let mut queries: Vec<String> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|panel| panel["targets"].as_array())
        .flatten()
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect();
    queries.extend(
        json["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .filter_map(|variable| Some(variable["definition"].as_str()?.to_owned())),
    );
    let on_dashboard: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    let mut queried = on_dashboard.clone();
    queried.extend(metric_names(&deploy_file("prometheus/alerts_test.yaml")));
    assert!(
        queried.contains("signgate_upstream_403_total"),
        "{queried:?}"
    );
    let unknown: Vec<_> = queried
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried by deploy/ but not exported: {unknown:?}\nexported: {exported:?}"
    );
    // Everywhere else (the rules, descriptions) a name may also be a metric's own, without the
    // suffix its samples carry.
    let mut named = metric_names(&dashboard);
    for rules in [
        "prometheus/alerts.yaml",
        "kubernetes/monitoring/prometheusrule.yaml",
    ] {
        named.extend(metric_names(&deploy_file(rules)));
    }
    let unknown: Vec<_> = named
        .iter()
        .filter(|name| {
            !["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| exported.contains(format!("{name}{suffix}").as_str()))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "named by deploy/ but not exported: {unknown:?}\nexported: {exported:?}"
    );
    // And the dashboard shows every metric family (`# TYPE signgate_requests counter`).
    let families = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next());
    for family in families {
        assert!(
            on_dashboard
                .iter()
                .any(|name| name == family || name.starts_with(&format!("{family}_"))),
            "{family} is in no dashboard query"
        );
    }
}

#[test]
fn signgate_run_serves_the_deploy_config_then_reloads_reports_and_drains() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("filestack");
    std::fs::write(&secret, SECRET).expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let pid_file = dir.path().join("signgate.pid");
    let toml = replaced(
        &configmap_toml(),
        &[
            ("\"0.0.0.0:8080\"", "\"127.0.0.1:0\""),
            ("\"0.0.0.0:9090\"", "\"127.0.0.1:0\""),
            (
                "\"/run/secrets/signgate/filestack\"",
                &format!("{secret:?}"),
            ),
            ("\"/run/signgate/signgate.pid\"", &format!("{pid_file:?}")),
        ],
    );
    let gateway = GatewayProcess::start(&toml);
    let nowhere = Path::new("/nonexistent");
    // The image's HEALTHCHECK, and Prometheus.
    let health = signgate(&["health", "--admin", &gateway.admin], nowhere);
    assert_eq!(health.status.code(), Some(0), "{health:?}");

    // `kubectl exec POD -- signgate reload`: through the config's pid file.
    let reload = |text: String| {
        std::fs::write(gateway.config_path(), text).expect("write");
        let out = signgate(&["reload"], &gateway.config_path());
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    };
    reload(replaced(&toml, &[("ttl = \"1h\"", "ttl = \"2h\"")]));
    gateway.wait_for_reloads("success", 1.0);
    // A [server] change needs a rollout restart: refused and counted, the old config serving on.
    reload(replaced(
        &toml,
        &[("shutdown_grace = \"30s\"", "shutdown_grace = \"20s\"")],
    ));
    gateway.wait_for_reloads("failure", 1.0);
    gateway.wait_for_log("restart signgate to apply it");

    assert_eq!(gateway.stop(), Some(0), "SIGTERM drains and exits 0");
    assert!(
        !pid_file.exists(),
        "the pid file is removed on a clean exit"
    );
}

#[test]
fn the_pod_and_the_unit_outlast_the_drain_and_the_unit_has_the_descriptors() {
    let pod = parse(&configmap_toml());
    let deployment = deploy_file("kubernetes/deployment.yaml");
    let termination = yaml_number(&deployment, "spec:", "terminationGracePeriodSeconds");
    let pre_stop = yaml_number(&deployment, "preStop:", "seconds");
    assert!(
        Duration::from_secs(termination)
            > pod.server.shutdown_grace + Duration::from_secs(pre_stop),
        "terminationGracePeriodSeconds {termination} must exceed the preStop sleep {pre_stop}s \
         plus shutdown_grace {:?}",
        pod.server.shutdown_grace
    );

    let host = parse(&deploy_file("systemd/gateway.toml"));
    let unit = deploy_file("systemd/signgate.service");
    let stop = humantime::parse_duration(unit_value(&unit, "TimeoutStopSec"))
        .or_else(|_| {
            unit_value(&unit, "TimeoutStopSec")
                .parse()
                .map(Duration::from_secs)
        })
        .expect("TimeoutStopSec");
    assert!(stop > host.server.shutdown_grace, "TimeoutStopSec {stop:?}");
    let limit: u64 = unit_value(&unit, "LimitNOFILE").parse().expect("a number");
    let needed = signgate::fdlimit::FdBudget::needed_for(&host);
    assert!(
        limit >= needed,
        "LimitNOFILE={limit}, but the config can need {needed}"
    );
}

#[test]
fn the_image_pod_and_unit_expose_the_ports_and_mount_the_paths_the_configs_name() {
    let pod = parse(&configmap_toml());
    let raw: toml::Table = toml::from_str(&configmap_toml()).expect("toml");
    let ports = BTreeSet::from([
        pod.server.listen.port(),
        pod.admin.as_ref().expect("[admin] listen").listen.port(),
    ]);

    let dockerfile = deploy_file("Dockerfile");
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse().expect("a port")))
        .collect();
    assert_eq!(exposed, ports, "the Dockerfile's EXPOSE");
    assert!(dockerfile.contains("COPY deploy/gateway.toml /etc/signgate/gateway.toml"));
    // `signgate health` (the HEALTHCHECK) and `signgate reload` read ./gateway.toml.
    assert!(dockerfile.contains("\nWORKDIR /etc/signgate\n"));

    let deployment = deploy_file("kubernetes/deployment.yaml");
    let container_ports: BTreeSet<u16> = deployment
        .lines()
        .filter_map(|line| line.trim().strip_prefix("containerPort:"))
        .map(|port| port.trim().parse().expect("a port"))
        .collect();
    assert_eq!(container_ports, ports, "the Deployment's containerPorts");
    let secret_file = Path::new(raw["signing"]["secret_file"].as_str().expect("secret_file"));
    let pid_file = pod.server.pid_file.as_deref().expect("pid_file");
    for (what, dir) in [
        ("the config", "/etc/signgate"),
        (
            "the Secret",
            secret_file.parent().and_then(Path::to_str).expect("dir"),
        ),
        (
            "the pid file",
            pid_file.parent().and_then(Path::to_str).expect("dir"),
        ),
    ] {
        assert!(
            deployment.contains(&format!("mountPath: {dir}\n")),
            "{what}: no volume at {dir}"
        );
    }
    let key = secret_file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(deploy_file("kubernetes/secret.yaml").contains(&format!("\n  {key}: ")));

    let host = parse(&deploy_file("systemd/gateway.toml"));
    let raw: toml::Table = toml::from_str(&deploy_file("systemd/gateway.toml")).expect("toml");
    let unit = deploy_file("systemd/signgate.service");
    assert!(unit_value(&unit, "ExecStart").ends_with("--config /etc/signgate/gateway.toml"));
    let credential = unit_value(&unit, "LoadCredential")
        .split(':')
        .next()
        .expect("an id");
    assert_eq!(
        raw["signing"]["secret_file"].as_str(),
        Some(format!("/run/credentials/signgate.service/{credential}").as_str())
    );
    assert_eq!(
        host.server.pid_file.as_deref(),
        Some(Path::new(&format!(
            "/run/{}/signgate.pid",
            unit_value(&unit, "RuntimeDirectory")
        )))
    );
}

/// `signgate health ARGS --config CONFIG`, off the runtime's thread: its exit code and output.
async fn health(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let args: Vec<String> = std::iter::once("health")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    let config = config.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        signgate(&args, &config)
    })
    .await
    .expect("ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn health_is_0_for_a_serving_gateway_found_from_the_config_alone() {
    let cdn = two_file_cdn().await;
    let gateway = TestGateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{SIGNING}[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\n",
        cdn.url()
    ))
    .await;
    let admin = gateway.admin.expect("admin listener");
    // A wildcard address is asked on loopback; the rest of the file (no routes: refused by
    // `check`) is not read, as a running gateway serves on after refusing a reload.
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        config.path(),
        format!("[admin]\nlisten = \"0.0.0.0:{}\"\n", admin.port()),
    )
    .expect("write");
    let (code, text) = health(&[], config.path()).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("/healthz: ok"), "{text}");
    let (code, text) = health(&["--admin", &admin.to_string()], Path::new("/nonexistent")).await;
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn health_is_1_without_a_200_and_2_without_an_address() {
    let (closed, closed_addr) = bind().await;
    drop(closed);
    let draining = start_origin(Arc::new(|_, _| respond(503, &[], "draining\n"))).await;
    let nowhere = Path::new("/nonexistent");
    for (addr, expected) in [
        (closed_addr, "no answer"),
        (draining, "answered \"HTTP/1.1 503 Service Unavailable\""),
    ] {
        let (code, text) = health(&["--admin", &addr.to_string()], nowhere).await;
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(expected), "{text}");
    }
    let no_admin = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(no_admin.path(), "[server]\nlisten = \"127.0.0.1:8080\"\n").expect("write");
    let (code, text) = health(&[], no_admin.path()).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no admin listener"), "{text}");
    let (code, _) = health(&[], nowhere).await;
    assert_eq!(code, Some(2));
}

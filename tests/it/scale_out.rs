//! The scale-out claim (README "Scaling out"), on the real binary over real sockets: two
//! `signgate run` replicas behind Debian's nginx as a round-robin load balancer hand out
//! byte-identical redirects, upload policies and rewritten pages for the same handle within a
//! bucket, whichever replica answers, and a reload of one replica does not change that.
//!
//! nginx also serves the gallery page both replicas front. The test needs `nginx` (Debian's
//! `nginx-light` is enough); it fails under CI (`CI` set) without it and says it skipped
//! elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::nginx::{Nginx, free_port, nginx_missing};
use crate::support::process::{GatewayProcess, http_get};
use crate::support::{H, H2, SIGNING};

/// Both replicas' expiries are rounded to this; the test keeps clear of its edges.
const BUCKET_SECS: u64 = 3600;
/// Requests per path through the load balancer, each round.
const ROUNDS: usize = 8;

/// What each replica serves: a redirect, an upload policy and a site route in front of the page
/// nginx serves.
fn replica_config(site: u16, extra_route: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{SIGNING}\
         ttl = \"1h\"\nbucket = \"1h\"\n\
         [[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
         upstream = \"https://cdn.filestackcontent.com\"\n\
         [[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n\
         {extra_route}\
         [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
         upstream = \"http://127.0.0.1:{site}\"\nrewrite_hosts = [\"cdn.filestackcontent.com\"]\n"
    )
}

/// The gallery page nginx serves as the site: bare CDN URLs in markup.
fn gallery_page() -> String {
    format!(
        "<!doctype html><html><body>\
         <img src=\"https://cdn.filestackcontent.com/{H}\">\
         <a href=\"https://cdn.filestackcontent.com/resize=width:300/{H2}\">b</a>\
         </body></html>"
    )
}

/// nginx as the load balancer (`upstream` round robin over the replicas, each answer marked
/// with the replica that gave it) and as the site's origin. Stopped on drop.
struct Balancer {
    /// Held: nginx stops when it drops.
    _nginx: Nginx,
    balancer: u16,
}

impl Balancer {
    fn start(site: u16, replicas: &[&str]) -> Self {
        let balancer = free_port();
        let servers: String = replicas
            .iter()
            .map(|addr| format!("    server {addr};\n"))
            .collect();
        let nginx = Nginx::start(
            |dir| {
                let root = dir.join("site");
                std::fs::create_dir(&root).expect("site dir");
                std::fs::write(root.join("index.html"), gallery_page()).expect("page");
                format!(
                    "  access_log off;\n  default_type text/html;\n\
                     upstream replicas {{\n{servers}  }}\n\
                     server {{\n    listen 127.0.0.1:{balancer};\n    location / {{\n\
                     proxy_pass http://replicas;\n      proxy_set_header Host $host;\n\
                     add_header X-Replica $upstream_addr always;\n    }}\n  }}\n\
                     server {{\n    listen 127.0.0.1:{site};\n    root {root};\n  }}",
                    root = root.display()
                )
            },
            &[balancer, site],
        );
        Self {
            _nginx: nginx,
            balancer,
        }
    }

    fn balancer(&self) -> String {
        format!("127.0.0.1:{}", self.balancer)
    }
}

/// One HTTP/1.1 answer, split: status line, headers (lower-cased names), body.
struct Answer {
    status: String,
    headers: BTreeMap<String, String>,
    body: String,
}

fn get(addr: &str, path: &str) -> Answer {
    let raw = http_get(addr, path);
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines.next().expect("status line").to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|te| te == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The payload of a chunked body.
fn dechunk(mut chunked: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = chunked.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        chunked = &rest[size + 2..];
    }
}

/// What identifies a signed answer: the redirect's `Location`, or the body.
fn signed_part(path: &str, answer: &Answer) -> String {
    assert!(
        answer.status.contains(" 200 ") || answer.status.contains(" 307 "),
        "{path}: {}",
        answer.status
    );
    if path.starts_with("/go/") {
        answer.headers.get("location").expect("a location").clone()
    } else {
        answer.body.clone()
    }
}

/// Sends every path `ROUNDS` times through the balancer; for each path, the one answer all
/// replicas gave. Fails if the replicas disagree or if one of them never answered.
fn through_balancer(balancer: &str, paths: &[String], replicas: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|path| {
            let mut by_replica: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for _ in 0..ROUNDS {
                let answer = get(balancer, path);
                let replica = answer.headers.get("x-replica").expect("marked").clone();
                by_replica
                    .entry(replica)
                    .or_default()
                    .insert(signed_part(path, &answer));
            }
            let answered: BTreeSet<&str> = by_replica.keys().map(String::as_str).collect();
            assert_eq!(
                answered,
                replicas.iter().copied().collect(),
                "{path}: both replicas answer"
            );
            let all: BTreeSet<&String> = by_replica.values().flatten().collect();
            assert_eq!(all.len(), 1, "{path}: replicas disagree: {by_replica:#?}");
            all.into_iter().next().expect("one answer").clone()
        })
        .collect()
}

/// Waits until at least a minute is left in the current bucket, so a run never straddles it.
fn clear_of_the_bucket_edge() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let into = now % BUCKET_SECS;
    if into > BUCKET_SECS - 60 {
        std::thread::sleep(Duration::from_secs(BUCKET_SECS - into + 2));
    }
}

#[test]
fn replicas_behind_a_load_balancer_hand_out_identical_urls_across_a_reload() {
    if nginx_missing("scale-out") {
        return;
    }
    clear_of_the_bucket_edge();
    let site = free_port();
    let config = replica_config(site, "");
    let first = GatewayProcess::start(&config);
    let second = GatewayProcess::start(&config);
    let replicas = [first.addr.as_str(), second.addr.as_str()];
    let nginx = Balancer::start(site, &replicas);
    let paths = [
        format!("/go/{H}"),
        format!("/go/{H2}"),
        "/upload-policy".to_owned(),
        "/index.html".to_owned(),
    ];

    let before = through_balancer(&nginx.balancer(), &paths, &replicas);
    // They are signed: the page's URLs carry a policy and signature now.
    let page = &before[3];
    assert!(!page.contains(&format!("com/{H}\"")), "{page}");
    assert_eq!(page.matches("signature=").count(), 2, "{page}");
    assert!(before[0].contains("signature="), "{}", before[0]);
    assert!(before[2].contains("\"signature\""), "{}", before[2]);

    // One replica reloads a config with another route beside the same signing.
    let extra = "[[route]]\nname = \"more\"\nprefix = \"/more/\"\nmode = \"redirect\"\n\
                 upstream = \"https://cdn.filestackcontent.com\"\n";
    first.rewrite(&replica_config(site, extra));
    first.signal("-HUP");
    first.wait_for_reloads("success", 1.0);
    assert!(http_get(&first.addr, &format!("/more/{H}")).starts_with("HTTP/1.1 307"));

    let after = through_balancer(&nginx.balancer(), &paths, &replicas);
    assert_eq!(after, before, "the reload changed what a replica hands out");
}

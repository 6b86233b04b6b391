//! Signing cost on one core: a cache miss (policy JSON, base64, HMAC-SHA256) and a cache hit;
//! and what a verify route spends checking a URL (parse, HMAC, decode, checks).
//!
//! Run: `cargo bench --bench sign`
//!
//! Targets (issue 2): miss under 2 µs, hit under 150 ns.
//! Last recorded (2-core x86_64 VM, 2026-11-29, two runs): miss 466–557 ns, miss through the
//! cache 678–685 ns, hit 99–106 ns. A verify route's check of a URL (2026-12-01):
//! 1.92–1.94 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use signgate::config::Config;
use signgate::filelink::Handle;
use signgate::signer::RouteSigner;

const NOW: u64 = 1_800_000_000;

fn signer(cache_size: usize) -> RouteSigner {
    let toml = format!(
        "[signing]\nsecret_env = \"S\"\ncache_size = {cache_size}\n\
         [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
         upstream = \"https://cdn.filestackcontent.com\"\ncalls = [\"read\", \"convert\"]\n"
    );
    let config = Config::from_toml_str(&toml, |_| Some("Z3IYZSH2UJA7VN3QYFVSVCF7PI".into()))
        .expect("bench config is valid");
    RouteSigner::for_route(&config.routes[0])
}

fn handles(n: usize) -> Vec<Handle> {
    (0..n)
        .map(|i| Handle::parse(&format!("h{i:0>19}")).expect("valid handle"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");

    let uncached = signer(1);
    let handle = handles(1)[0];
    group.bench_function("miss: policy + base64 + hmac", |b| {
        b.iter(|| uncached.sign_uncached(NOW, black_box(NOW + 3600), black_box(Some(handle))))
    });

    // 4096 handles through a 1024-entry cache: every lookup misses, signs, inserts and evicts.
    let small = signer(1024);
    let many = handles(4096);
    let mut i = 0;
    group.bench_function("miss through the cache (lookup + sign + insert)", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            small.credentials(black_box(NOW), Some(many[i]))
        })
    });

    // 1000 hot handles, all cached in this bucket.
    let warm = signer(100_000);
    let hot = handles(1000);
    for h in &hot {
        warm.credentials(NOW, Some(*h));
    }
    let mut j = 0;
    group.bench_function("hit", |b| {
        b.iter(|| {
            j = (j + 1) % hot.len();
            warm.credentials(black_box(NOW), Some(hot[j]))
        })
    });
    group.finish();
}

/// What a verify route does per request before it asks the origin: read the URL in any
/// spelling, HMAC the policy, decode it and check expiry, handle and calls.
fn verify(c: &mut Criterion) {
    let route = &Config::from_toml_str(
        "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"files\"\nprefix = \"/v/\"\n\
         mode = \"verify\"\nupstream = \"http://127.0.0.1:9000\"\n",
        |_| Some("Z3IYZSH2UJA7VN3QYFVSVCF7PI".into()),
    )
    .expect("bench config is valid")
    .routes[0];
    let signing = &route.signing;
    let signgate::config::RouteKind::Verify(verify) = &route.kind else {
        unreachable!("a verify route");
    };
    let handle = handles(1)[0];
    let credentials = RouteSigner::for_route(route).sign_uncached(NOW, NOW + 3600, Some(handle));
    let query = format!(
        "policy={}&signature={}",
        credentials.policy_for_query(),
        credentials.signature
    );
    c.bench_function("verify: parse + hmac + decode + checks", |b| {
        b.iter(|| {
            signgate::mode::verify::check(
                black_box(handle.as_str()),
                Some(black_box(&query)),
                signing,
                &route.tasks,
                &verify.checks,
                NOW,
            )
        })
    });
}

criterion_group!(benches, bench, verify);
criterion_main!(benches);

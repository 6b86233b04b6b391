//! Bucketed expiry and the credential cache, with time moved by a manual clock.

use std::sync::Arc;

use signgate::cache::CacheOutcome;
use signgate::clock::{Clock, ManualClock};
use signgate::config::Config;
use signgate::filelink::{FileRef, Handle, signed_url};
use signgate::policy::Call;
use signgate::signer::RouteSigner;
use signgate::verify::verify_at;

const START: u64 = 1_800_000_000; // a multiple of 300

fn route_signer(extra: &str) -> (RouteSigner, Config) {
    let toml = format!(
        "[signing]\nsecret_env = \"S\"\nttl = \"1h\"\nbucket = \"5m\"\n{extra}\n\
         [[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
         upstream = \"https://cdn.example\"\ncalls = [\"read\", \"convert\"]\n"
    );
    let config = Config::from_toml_str(&toml, |_| Some("bucket-secret".into())).expect("valid");
    (RouteSigner::for_route(&config.routes[0]), config)
}

fn handle(i: usize) -> Handle {
    Handle::parse(&format!("h{i:0>19}")).expect("valid handle")
}

#[test]
fn one_bucket_gives_byte_identical_credentials_and_the_next_gives_new_ones() {
    let (signer, _) = route_signer("");
    let clock = ManualClock::new(START + 1);
    let (first, outcome) = signer.credentials(clock.now_unix(), Some(handle(1)));
    assert_eq!(outcome, CacheOutcome::Miss);
    for _ in 0..299 {
        clock.advance(1);
        let (again, outcome) = signer.credentials(clock.now_unix(), Some(handle(1)));
        assert_eq!(outcome, CacheOutcome::Hit);
        assert!(Arc::ptr_eq(&first, &again));
    }
    // A second signer (another replica) with a cold cache agrees byte for byte.
    let (replica, _) = route_signer("");
    let (theirs, outcome) = replica.credentials(clock.now_unix(), Some(handle(1)));
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(*theirs, *first);

    clock.advance(1); // START + 301: the next bucket
    let (next, outcome) = signer.credentials(clock.now_unix(), Some(handle(1)));
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_ne!(next.policy, first.policy);
    assert_eq!(next.expiry, first.expiry + 300);
    assert_eq!(signer.cache().hits(), 299);
}

#[test]
fn every_url_is_valid_for_at_least_ttl_and_bound_to_its_handle() {
    let (signer, config) = route_signer("");
    let route = &config.routes[0];
    let upstream = route.upstream().expect("proxy has an upstream");
    for now in (START..START + 900).step_by(7) {
        let (creds, _) = signer.credentials(now, Some(handle(2)));
        let file = FileRef {
            tasks: vec!["resize=width:300"],
            handle: handle(2),
        };
        let url = signed_url(
            upstream.base(),
            &file,
            None,
            &creds,
            route.signing.url_style,
        );
        let secret = &route.signing.secret;
        assert!(
            verify_at(&url, secret, now + 3599, Call::Read).is_ok(),
            "{now}"
        );
        assert!(verify_at(&url, secret, creds.expiry, Call::Read).is_err());
        let other = url.replace(handle(2).as_str(), handle(3).as_str());
        assert!(verify_at(&other, secret, now, Call::Read).is_err());
    }
}

#[test]
fn the_cache_stays_within_cache_size_under_many_handles() {
    let (signer, _) = route_signer("cache_size = 50");
    for i in 0..5_000 {
        signer.credentials(START, Some(handle(i)));
    }
    assert!(signer.cache().len() <= 50, "{}", signer.cache().len());
    assert_eq!(signer.cache().misses(), 5_000);
    // The most recent handles are still there.
    let (_, outcome) = signer.credentials(START, Some(handle(4_999)));
    assert_eq!(outcome, CacheOutcome::Hit);
}

#[test]
fn the_route_limits_are_in_every_policy() {
    let (signer, _) = route_signer("");
    let policy = signer.policy(START, Some(handle(1)));
    assert_eq!(policy.call, [Call::Read, Call::Convert]);
    assert_eq!(policy.handle.as_deref(), Some(handle(1).as_str()));
}

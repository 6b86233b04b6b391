//! Akamai EdgeAuth tokens against akamai-edgeauth 0.3.2's vectors: every token reproduced byte
//! for byte, read back and verified, and refused once tampered with, early or late.

use serde_json::Value;
use signgate::scheme::Invalid;
use signgate::scheme::akamai::{EdgeAuth, EndTime, StartTime, TokenFields, TokenTimes};

use crate::cdn_schemes::{cases, scheme, text};

fn vectors() -> Vec<Value> {
    cases(&scheme("akamai_edgeauth"), 8)
}

/// The SDK's `EdgeAuth(...)` for a case; its delimiters are the SDK's defaults, so ours must be.
fn edge_auth(case: &Value) -> EdgeAuth {
    assert_eq!(
        (text(case, "field_delimiter"), text(case, "acl_delimiter")),
        ("~", "!")
    );
    EdgeAuth::new(
        text(case, "key_hex"),
        text(case, "algorithm").parse().expect("known"),
    )
    .expect("hex key")
    .with_escape_early(case["escape_early"].as_bool().expect("bool"))
    .with_salt(case["salt"].as_str().unwrap_or(""))
}

/// The instant the SDK's clock read: only `start_time="now"` reads it.
fn sdk_now(case: &Value) -> u64 {
    case["frozen_utc"].as_str().map_or(0, |utc| {
        let at = humantime::parse_rfc3339(utc).expect("RFC 3339");
        at.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    })
}

fn times(case: &Value) -> TokenTimes {
    let start = match &case["start_time"] {
        Value::Null => StartTime::Omitted,
        Value::String(now) if now == "now" => StartTime::Now,
        at => StartTime::At(at.as_u64().expect("unix seconds")),
    };
    let end = match case["end_time"].as_u64() {
        Some(at) => EndTime::At(at),
        None => EndTime::Window(case["window_seconds"].as_u64().expect("a window")),
    };
    TokenTimes::resolve(start, end, sdk_now(case)).expect("valid times")
}

fn fields(case: &Value) -> TokenFields<'_> {
    TokenFields {
        ip: case["ip"].as_str(),
        id: case["session_id"].as_str(),
        data: case["payload"].as_str(),
    }
}

/// A path the case's token grants: the URL itself, or one its first ACL pattern matches.
fn granted_path(case: &Value) -> String {
    match &case["argument"] {
        Value::String(path) if text(case, "method") == "generate_url_token" => path.clone(),
        Value::String(acl) => acl.replace('*', "a/b.ts"),
        Value::Array(acls) => acls[0].as_str().expect("acl").replace('*', "a/b.ts"),
        other => panic!("argument {other}"),
    }
}

fn sign(case: &Value) -> String {
    let auth = edge_auth(case);
    match (text(case, "method"), &case["argument"]) {
        ("generate_url_token", Value::String(url)) => {
            auth.url_token(url, times(case), &fields(case))
        }
        ("generate_acl_token", Value::String(acl)) => {
            auth.acl_token(&[acl], times(case), &fields(case))
        }
        ("generate_acl_token", Value::Array(acls)) => {
            let acls: Vec<&str> = acls.iter().map(|acl| acl.as_str().expect("acl")).collect();
            auth.acl_token(&acls, times(case), &fields(case))
        }
        (method, argument) => panic!("{method}({argument})"),
    }
}

#[test]
fn every_vector_is_signed_byte_for_byte() {
    for case in vectors() {
        let token = sign(&case);
        assert_eq!(token, text(&case, "token"), "{}", case["name"]);
        assert!(token.ends_with(&format!("hmac={}", text(&case, "hmac"))));
    }
}

#[test]
fn every_vector_decodes_and_verifies_for_the_path_it_grants() {
    for case in vectors() {
        let name = &case["name"];
        let token = text(&case, "token");
        let auth = edge_auth(&case);
        let decoded = auth.decode(token).expect("decodes");
        let times = times(&case);
        assert_eq!(
            (decoded.start, decoded.expiry),
            (times.start(), times.expiry()),
            "{name}"
        );
        assert_eq!(decoded.hmac, text(&case, "hmac"), "{name}");
        assert_eq!(
            decoded.acl.is_some(),
            text(&case, "method") == "generate_acl_token"
        );
        let now = decoded.start.unwrap_or(decoded.expiry - 1);
        let path = granted_path(&case);
        assert_eq!(
            auth.verify(token, &path, now),
            Ok(decoded.clone()),
            "{name}"
        );
        assert_eq!(
            auth.verify(token, &path, decoded.expiry - 1),
            Ok(decoded),
            "{name}"
        );
    }
}

#[test]
fn early_and_expired_tokens_are_refused() {
    for case in vectors() {
        let (auth, token, path) = (edge_auth(&case), text(&case, "token"), granted_path(&case));
        let decoded = auth.decode(token).expect("decodes");
        let expiry = decoded.expiry;
        assert_eq!(
            auth.verify(token, &path, expiry),
            Err(Invalid::Expired { expiry }),
            "{}",
            case["name"]
        );
        if let Some(start) = decoded.start {
            assert_eq!(
                auth.verify(token, &path, start - 1),
                Err(Invalid::NotYetValid { start })
            );
        }
    }
}

#[test]
fn a_tampered_token_or_another_path_is_refused() {
    let cases = vectors();
    let now = 1767225700;
    let [acl, url, escaped, list] = [&cases[0], &cases[1], &cases[2], &cases[3]];
    let acl_token = text(acl, "token");
    let bad = Invalid::BadSignature;
    let tampered = [
        // One character of a field or of the HMAC.
        ("exp=1767225900", "exp=1767225901", bad.clone()),
        ("acl=/*", "acl=/**", bad.clone()),
        ("hmac=fbe8", "hmac=fbe9", bad.clone()),
        ("hmac=fbe8", "hmac=zzz", bad.clone()),
        ("~hmac=", "~mac=", Invalid::Missing("hmac")),
        // A field the edge does not know is read as part of the value before it.
        ("exp=", "xp=", Invalid::Malformed("st")),
        ("~exp=1767225900", "", Invalid::Missing("exp")),
        ("st=", "exp=1~st=", Invalid::Malformed("token")),
    ];
    for (from, to, why) in tampered {
        let token = acl_token.replace(from, to);
        assert_eq!(
            edge_auth(acl).verify(&token, "/x", now),
            Err(why),
            "{token}"
        );
    }
    let other_paths = [
        // A URL token grants its own URL only.
        (url, "/videos/intro.mp3", bad.clone()),
        (escaped, "/path with space/u.mp4?a=b&c=d", bad.clone()),
        // An ACL token grants only what a pattern matches.
        (list, "/live", Invalid::NotCovered),
    ];
    for (case, path, why) in other_paths {
        let token = text(case, "token");
        assert_eq!(edge_auth(case).verify(token, path, now), Err(why), "{path}");
    }
    assert!(
        edge_auth(list)
            .verify(text(list, "token"), "/vod/x.ts", now)
            .is_ok()
    );
    // The salt is part of the key.
    let unsalted = edge_auth(list).with_salt("");
    assert_eq!(
        unsalted.verify(text(list, "token"), "/vod/x.ts", now),
        Err(bad)
    );
}

#[test]
fn other_delimiters_join_the_fields_and_the_acls() {
    let case = &vectors()[3];
    let auth = edge_auth(case).with_delimiters(',', ';');
    let token = auth.acl_token(&["/live/*", "/vod/*"], times(case), &fields(case));
    let sdk = text(case, "token");
    let (fields_part, _) = sdk.split_once("~hmac=").expect("hmac");
    let expected = fields_part.replace('~', ",").replace('!', ";");
    assert!(token.starts_with(&format!("{expected},hmac=")), "{token}");
    assert!(auth.verify(&token, "/vod/x.ts", 1767225700).is_ok());
    assert_eq!(
        auth.verify(sdk, "/vod/x.ts", 1767225700),
        Err(Invalid::Missing("hmac"))
    );
}

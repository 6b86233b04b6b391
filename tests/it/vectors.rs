//! The official SDKs' signing vectors (`../shared/vectors/`): signatures, decoding, our own
//! encoding and both URL forms must agree with them.

use serde_json::Value;
use signgate::filelink::{FileRef, Handle, UrlStyle, signed_url};
use signgate::policy::{Call, Credentials, DecodedPolicy, Policy, PolicyLimits};
use signgate::secret::Secret;
use signgate::verify::{Invalid, verify_at};

const KEY_ORDER: [&str; 8] = [
    "expiry",
    "call",
    "handle",
    "url",
    "maxSize",
    "minSize",
    "path",
    "container",
];

fn vectors() -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = std::fs::read_to_string(format!("{root}/tests/data/filestack-security.json"))
        .expect("tests/data/filestack-security.json is in the repository");
    // CI has ../shared beside the clone: the copy must not drift from the source of truth.
    if let Ok(shared) =
        std::fs::read_to_string(format!("{root}/../shared/vectors/filestack-security.json"))
    {
        assert_eq!(
            copy, shared,
            "tests/data copy differs from ../shared/vectors"
        );
    }
    let entries: Vec<Value> = serde_json::from_str(&copy).expect("vectors are JSON");
    assert_eq!(entries.len(), 139);
    entries
}

fn text<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {}", entry["name"]))
}

fn secret_of(entry: &Value) -> Secret {
    Secret::from_bytes(text(entry, "secret").as_bytes())
}

#[test]
fn every_signature_is_reproduced() {
    for entry in vectors() {
        let policy = text(&entry, "policy_b64");
        assert_eq!(
            secret_of(&entry).sign_hex(policy.as_bytes()),
            text(&entry, "signature"),
            "{}",
            entry["name"]
        );
    }
}

#[test]
fn every_policy_decodes_to_its_input_fields() {
    for entry in vectors() {
        let name = &entry["name"];
        let input = &entry["policy_json_input"];
        let decoded = DecodedPolicy::decode(text(&entry, "policy_b64")).expect("decodes");
        assert_eq!(decoded.json, text(&entry, "policy_json"), "{name}");
        let expiry = input["expiry"].as_f64().expect("numeric expiry");
        assert_eq!(decoded.expiry, expiry as u64, "{name}");
        let calls = match &input["call"] {
            Value::Null => None,
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(a) => Some(
                a.iter()
                    .map(|c| c.as_str().expect("call name").to_owned())
                    .collect(),
            ),
            other => panic!("{name}: call {other}"),
        };
        assert_eq!(decoded.call, calls, "{name}");
        let s = |k: &str| input[k].as_str().map(str::to_owned);
        assert_eq!(decoded.handle, s("handle"), "{name}");
        assert_eq!(decoded.limits, our_limits(input), "{name}");
    }
}

/// Builds our typed policy from a vector's input, when the input is one signgate can express.
fn our_policy(input: &Value) -> Option<Policy> {
    let s = |k: &str| input[k].as_str().map(str::to_owned);
    let call = match &input["call"] {
        Value::Null => Vec::new(),
        Value::Array(list) => list
            .iter()
            .map(|c| c.as_str().and_then(|c| c.parse::<Call>().ok()))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    Some(Policy {
        expiry: input["expiry"].as_u64()?,
        call,
        handle: s("handle"),
        limits: our_limits(input),
    })
}

/// The limits a vector's input sets.
fn our_limits(input: &Value) -> PolicyLimits {
    let s = |k: &str| input[k].as_str().map(str::to_owned);
    PolicyLimits {
        url: s("url"),
        max_size: input["maxSize"].as_u64(),
        min_size: input["minSize"].as_u64(),
        path: s("path"),
        container: s("container"),
    }
}

/// Whether the SDK wrote the keys in signgate's order (read off the JSON text: serde_json's map
/// does not keep insertion order).
fn keys_in_our_order(json: &str) -> bool {
    let positions: Vec<usize> = KEY_ORDER
        .into_iter()
        .filter_map(|k| json.find(&format!("\"{k}\"")))
        .collect();
    positions.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn our_encoding_decodes_to_the_same_fields_and_matches_compact_sdks_byte_for_byte() {
    let mut byte_identical = 0;
    for entry in vectors() {
        let name = &entry["name"];
        let Some(policy) = our_policy(&entry["policy_json_input"]) else {
            continue;
        };
        let ours = policy.encode();
        let decoded = DecodedPolicy::decode(&ours).expect("our policy decodes");
        let theirs = DecodedPolicy::decode(text(&entry, "policy_b64")).expect("decodes");
        assert_eq!(
            DecodedPolicy {
                json: String::new(),
                ..decoded
            },
            DecodedPolicy {
                json: String::new(),
                ..theirs
            },
            "{name}"
        );
        // Ruby (url-safe) and JS (standard alphabet) write compact JSON in insertion order: where
        // that order is ours, the bytes must be ours.
        if keys_in_our_order(text(&entry, "policy_json")) {
            let expected = text(&entry, "policy_b64")
                .replace('+', "-")
                .replace('/', "_");
            match text(&entry, "sdk") {
                "filestack-ruby" | "filestack-js" => {
                    assert_eq!(ours, expected, "{name}");
                    let signed = policy.sign(&secret_of(&entry));
                    assert_eq!(
                        signed.signature,
                        secret_of(&entry).sign_hex(expected.as_bytes())
                    );
                    byte_identical += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        byte_identical >= 40,
        "only {byte_identical} byte-identical cases"
    );
}

fn credentials_of(entry: &Value) -> Credentials {
    Credentials {
        policy: text(entry, "policy_b64").to_owned(),
        signature: text(entry, "signature").to_owned(),
        expiry: 0,
    }
}

#[test]
fn every_sdk_url_verifies_in_every_spelling() {
    let mut checked = 0;
    for entry in vectors() {
        let Some(urls) = entry["urls"].as_object() else {
            continue;
        };
        let secret = secret_of(&entry);
        let decoded = DecodedPolicy::decode(text(&entry, "policy_b64")).expect("decodes");
        let now = decoded.expiry - 1;
        for (kind, url) in urls {
            let url = url.as_str().expect("url");
            let call = if kind.starts_with("delete") {
                Call::Remove
            } else {
                Call::Read
            };
            let result = verify_at(url, &secret, now, call);
            let label = format!("{} {kind}", entry["name"]);
            if kind == "sign_url_helper" && !url.contains('?') {
                // filestack-ruby's helper forgets the `?`: the CDN cannot read its credentials.
                assert_eq!(result, Err(Invalid::Missing("policy")), "{label}");
            } else if let Some(refused) = [Call::Remove, Call::Stat, Call::Convert]
                .into_iter()
                .find(|c| url_needs(kind, url, *c) && !decoded.allows(*c))
            {
                assert_eq!(result, Err(Invalid::CallNotAllowed(refused)), "{label}");
            } else if kind.starts_with("external") && decoded.handle.is_some() {
                assert!(
                    matches!(result, Err(Invalid::WrongHandle { .. })),
                    "{label}: {result:?}"
                );
            } else {
                assert!(result.is_ok(), "{label}: {result:?}");
                // One changed byte in the policy must break it.
                let tampered = url.replacen("eyJ", "eyK", 1);
                assert_eq!(
                    verify_at(&tampered, &secret, now, call),
                    Err(Invalid::BadSignature),
                    "{label}"
                );
                assert!(matches!(
                    verify_at(url, &secret, decoded.expiry, call),
                    Err(Invalid::Expired { .. })
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} URLs checked");
}

/// Whether an SDK URL of this kind needs `call` beyond `read`.
fn url_needs(kind: &str, url: &str, call: Call) -> bool {
    match call {
        Call::Remove => kind.starts_with("delete"),
        Call::Stat => url.contains("/metadata"),
        Call::Convert => url.contains("resize="),
        _ => false,
    }
}

#[test]
fn our_urls_match_the_sdks_in_both_forms() {
    let mut compared = 0;
    for entry in vectors() {
        let Some(urls) = entry["urls"].as_object() else {
            continue;
        };
        let input = &entry["policy_json_input"];
        let Some(handle) = input["handle"].as_str() else {
            continue;
        };
        let handle = Handle::parse(handle).expect("vector handles are valid");
        let creds = credentials_of(&entry);
        let plain = FileRef {
            tasks: vec![],
            handle,
        };
        let resized = FileRef {
            tasks: vec!["resize=width:300"],
            handle,
        };
        let cdn = "https://cdn.filestackcontent.com";
        let url = |k: &str| urls[k].as_str().expect("url").to_owned();
        match text(&entry, "sdk") {
            "filestack-python" => {
                assert_eq!(
                    signed_url(cdn, &plain, None, &creds, UrlStyle::Task),
                    url("filelink_signed_url")
                );
                assert_eq!(
                    signed_url(cdn, &resized, None, &creds, UrlStyle::Task),
                    url("transform_resize_signed_url")
                );
                compared += 2;
            }
            "filestack-php" => {
                // PHP leaves `=` raw in the query; signgate percent-encodes it as the docs ask.
                let expected = url("filelink_signed_url_query_form")
                    .replace(&creds.policy, &creds.policy_for_query());
                assert_eq!(
                    signed_url(cdn, &plain, None, &creds, UrlStyle::Query),
                    expected
                );
                compared += 1;
            }
            _ => {}
        }
    }
    assert!(compared >= 12, "only {compared} URLs compared");
}

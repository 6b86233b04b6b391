//! CloudFront signed URLs against botocore's vectors: every URL reproduced byte for byte, read
//! back and verified, and refused once tampered with, early or late.

use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde_json::Value;
use signgate::scheme::Invalid;
use signgate::scheme::cloudfront::{
    CREDENTIAL_PARAMS, CloudFrontKeyError, CloudFrontSigner, CustomPolicy, SignedUrl, encode_base64,
};

use crate::cdn_schemes::{cases, scheme, text};

fn vectors() -> (CloudFrontSigner, Vec<Value>) {
    let scheme = scheme("cloudfront");
    let signer = CloudFrontSigner::from_pem(
        text(&scheme, "key_pair_id"),
        text(&scheme, "private_key_pem_pkcs1"),
    )
    .expect("the vectors' key signs");
    (signer, cases(&scheme, 6))
}

fn epoch(date: &Value) -> u64 {
    date["epoch"].as_u64().expect("epoch seconds")
}

/// What a case's arguments sign to, through the API a route would call.
fn sign(signer: &CloudFrontSigner, case: &Value) -> String {
    let url = text(case, "url");
    let args = &case["build_policy_args"];
    let signed = match text(case, "kind") {
        "canned" => signer.sign_canned(url, epoch(&case["date_less_than"])),
        "custom" if args.is_object() => {
            let policy = CustomPolicy {
                resource: text(args, "resource"),
                expiry: epoch(&args["date_less_than"]),
                start: args.get("date_greater_than").map(epoch),
                ip: args["ip_address"].as_str(),
            };
            assert_eq!(
                policy.to_json(),
                text(case, "policy_input"),
                "{}",
                case["name"]
            );
            signer.sign_custom(url, &policy)
        }
        "custom" => signer.sign_policy(url, text(case, "policy_input")),
        other => panic!("kind {other}"),
    };
    signed.expect("signs")
}

#[test]
fn every_vector_is_signed_byte_for_byte() {
    let (signer, cases) = vectors();
    for case in &cases {
        assert_eq!(
            sign(&signer, case),
            text(case, "signed_url"),
            "{}",
            case["name"]
        );
        for name in case["added_params"]
            .as_object()
            .expect("added_params")
            .keys()
        {
            assert!(CREDENTIAL_PARAMS.contains(&name.as_str()), "{name}");
        }
    }
}

#[test]
fn a_pkcs8_key_signs_the_same_urls_as_its_pkcs1_form() {
    let scheme = scheme("cloudfront");
    let pkcs1 = text(&scheme, "private_key_pem_pkcs1");
    let pkcs8 = rsa::PrivateKey::from_pkcs1_pem(pkcs1)
        .expect("PKCS#1")
        .to_pkcs8_pem(LineEnding::LF)
        .expect("re-encodes");
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    let signer = CloudFrontSigner::from_pem("K2SIGNGATETEST", &pkcs8).expect("PKCS#8 accepted");
    let case = &cases(&scheme, 6)[0];
    assert_eq!(sign(&signer, case), text(case, "signed_url"));
}

#[test]
fn every_vector_decodes_to_its_signed_policy_and_verifies() {
    let (signer, cases) = vectors();
    for case in &cases {
        let name = &case["name"];
        let signed_url = text(case, "signed_url");
        let decoded = SignedUrl::decode(signed_url).expect("decodes");
        assert_eq!(decoded.policy_json, text(case, "signed_policy"), "{name}");
        assert_eq!(decoded.url, text(case, "url"), "{name}");
        assert_eq!(decoded.key_pair_id, "K2SIGNGATETEST", "{name}");
        let args = &case["build_policy_args"];
        let dates = if args.is_object() { args } else { case };
        if let Some(expiry) = dates.get("date_less_than") {
            assert_eq!(decoded.expiry, epoch(expiry), "{name}");
        }
        assert_eq!(
            decoded.start,
            dates.get("date_greater_than").map(epoch),
            "{name}"
        );
        assert_eq!(decoded.canned, text(case, "kind") == "canned", "{name}");
        let now = decoded.start.map_or(decoded.expiry - 1, |start| start + 1);
        assert_eq!(
            signer.verify(signed_url, now),
            Ok(decoded.clone()),
            "{name}"
        );
        assert_eq!(
            signer.verify(signed_url, decoded.expiry - 1),
            Ok(decoded),
            "{name}"
        );
    }
    let single_ip = SignedUrl::decode(text(&cases[4], "signed_url")).expect("decodes");
    assert_eq!(single_ip.ip.as_deref(), Some("203.0.113.7/32"));
    let handwritten = SignedUrl::decode(text(&cases[5], "signed_url")).expect("decodes");
    assert_eq!(
        (handwritten.expiry, handwritten.resource.as_deref()),
        (
            1924992000,
            Some("https://d111111abcdef8.cloudfront.net/downloads/*")
        )
    );
}

#[test]
fn expired_and_early_urls_are_refused() {
    let (signer, cases) = vectors();
    for case in &cases {
        let signed_url = text(case, "signed_url");
        let decoded = SignedUrl::decode(signed_url).expect("decodes");
        assert_eq!(
            signer.verify(signed_url, decoded.expiry),
            Err(Invalid::Expired {
                expiry: decoded.expiry
            }),
            "{}",
            case["name"]
        );
    }
    let with_start = text(&cases[3], "signed_url");
    assert_eq!(
        signer.verify(with_start, 1767225600),
        Err(Invalid::NotYetValid { start: 1767225600 })
    );
}

/// Replaces the first `from` after `after` in `url`.
fn tamper(url: &str, after: &str, from: &str, to: &str) -> String {
    let at = url.find(after).expect("marker") + after.len();
    let (head, tail) = url.split_at(at);
    assert!(tail.contains(from), "{from} in {tail}");
    format!("{head}{}", tail.replacen(from, to, 1))
}

/// `url` with its custom policy's expiry moved one second later, under the same signature.
fn later_policy(url: &str) -> String {
    let policy = SignedUrl::decode(url).expect("decodes").policy_json;
    let later = policy.replace("1893456000", "1893456001");
    assert_ne!(later, policy);
    let [old, new] = [policy, later].map(|json| encode_base64(json.as_bytes()));
    tamper(url, "Policy=", &old, &new)
}

#[test]
fn a_tampered_url_is_refused() {
    let (signer, cases) = vectors();
    let now = 1800000000;
    let canned = text(&cases[0], "signed_url");
    let with_query = text(&cases[1], "signed_url");
    let wildcard = text(&cases[2], "signed_url");
    let refused = [
        // Another object, another query value, a later expiry: the canned policy changes.
        (
            tamper(canned, "images/", "cat", "dog"),
            Invalid::BadSignature,
        ),
        (
            tamper(with_query, "quality=", "hd", "sd"),
            Invalid::BadSignature,
        ),
        (
            tamper(canned, "Expires=", "1893456000", "1893456001"),
            Invalid::BadSignature,
        ),
        // One character of the signature or the policy.
        (
            tamper(canned, "Signature=", "F516", "F517"),
            Invalid::BadSignature,
        ),
        (later_policy(wildcard), Invalid::BadSignature),
        // Outside the wildcard: the signature holds, the resource does not.
        (
            tamper(wildcard, "", "/videos/2026", "/private/2026"),
            Invalid::NotCovered,
        ),
        (
            tamper(canned, "Key-Pair-Id=", "K2", "K3"),
            Invalid::WrongKey("K3SIGNGATETEST".into()),
        ),
        (
            tamper(canned, "", "&Signature", "&Sig"),
            Invalid::Missing("Signature"),
        ),
        (
            tamper(wildcard, "", "Policy=", "Pol="),
            Invalid::Missing("Policy"),
        ),
        (
            tamper(canned, "", "&Key-Pair-Id", "&Policy=e30_&Key-Pair-Id"),
            Invalid::Malformed("Expires"),
        ),
        (
            tamper(wildcard, "", "Policy=eyJ", "Policy=!yJ"),
            Invalid::Malformed("Policy"),
        ),
    ];
    for (url, why) in refused {
        assert_eq!(signer.verify(&url, now), Err(why), "{url}");
    }
    // The wildcard grants its other objects, with this very signature.
    let sibling = tamper(wildcard, "", "2026/launch", "2025/trailer");
    assert!(signer.verify(&sibling, now).is_ok());
}

#[test]
fn keys_that_cannot_sign_are_refused_and_none_is_ever_printed() {
    let scheme = scheme("cloudfront");
    let pkcs1 = text(&scheme, "private_key_pem_pkcs1");
    assert_eq!(
        CloudFrontSigner::from_pem("", pkcs1).err(),
        Some(CloudFrontKeyError::EmptyKeyPairId)
    );
    for pem in ["", "not a key", text(&scheme, "public_key_pem")] {
        assert_eq!(
            CloudFrontSigner::from_pem("K", pem).err(),
            Some(CloudFrontKeyError::NotRsaPem)
        );
    }
    let signer = CloudFrontSigner::from_pem("K2SIGNGATETEST", pkcs1).expect("signs");
    let debug = format!("{signer:?}");
    assert_eq!(
        debug,
        r#"CloudFrontSigner { key_pair_id: "K2SIGNGATETEST", key: "<redacted>" }"#
    );
}

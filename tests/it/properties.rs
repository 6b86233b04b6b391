//! Properties of the parsers and the rewriter over generated input: sign → verify round trips,
//! rewriting is idempotent, never yields two credential sets, never touches other hosts, and no
//! parser panics on anything.

use std::sync::Arc;

use proptest::prelude::*;
use signgate::filelink::{FileRef, Handle, UrlStyle, signed_url, strip_client_credentials};
use signgate::policy::{Call, DecodedPolicy, Policy, PolicyLimits};
use signgate::rewrite::{CdnUrlSigner, HtmlTransform, JsonTransform, SiteUrls, Transform};
use signgate::secret::Secret;
use signgate::verify::{parse_url, verify_at};

const NOW: u64 = 1_800_000_000;

fn handle() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{20}"
}

fn site_signer() -> Arc<CdnUrlSigner> {
    SiteUrls::fixture("", "prop-secret").at(NOW)
}

fn rewrite(html: &str, chunk: usize) -> String {
    let mut t = HtmlTransform::new(site_signer(), None).expect("rewriter");
    let mut out = Vec::new();
    for piece in html.as_bytes().chunks(chunk.max(1)) {
        out.extend(t.push(piece).expect("rewrites"));
    }
    out.extend(t.finish().expect("ends"));
    String::from_utf8_lossy(&out).into_owned()
}

fn splice_json(json: &[u8], chunk: usize) -> Vec<u8> {
    let mut t = JsonTransform::new(site_signer());
    let mut out = Vec::new();
    for piece in json.chunks(chunk.max(1)) {
        out.extend(t.push(piece).expect("splices"));
    }
    out.extend(t.finish().expect("ends"));
    out
}

/// A JSON object holding each URL as a key or as a value, with `value` written for each value.
fn json_object(parts: &[(String, bool, String)], value: impl Fn(&str) -> String) -> String {
    let members: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, (url, as_key, space))| {
            if *as_key {
                format!("{space}\"{url}\"{space}:{space}{i}.50")
            } else {
                format!("{space}\"k{i}\":{space}[\"{}\"]{space}", value(url))
            }
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A URL a gallery might write: on the CDN (maybe with tasks, a query, stale credentials, a
/// fragment), on another host, or relative.
fn gallery_url() -> impl Strategy<Value = String> {
    let task = prop_oneof![
        Just(""),
        Just("resize=width:300/"),
        Just("resize=w:1,h:2/flip/")
    ];
    let query = prop_oneof![
        Just(""),
        Just("?dl=true"),
        Just("?policy=stale&signature=stale"),
        Just("?a=1&POLICY=x")
    ];
    let fragment = prop_oneof![Just(""), Just("#top")];
    let host = prop_oneof![
        Just("https://cdn.filestackcontent.com/"),
        Just("https://CDN.filestackcontent.com/"),
        Just("https://example.com/"),
        Just("/local/"),
    ];
    (host, task, handle(), query, fragment)
        .prop_map(|(h, t, handle, q, f)| format!("{h}{t}{handle}{q}{f}"))
}

fn element(url: String, kind: u8) -> String {
    match kind % 5 {
        0 => format!("<img src=\"{url}\" alt=\"x\">"),
        1 => format!("<a href=\"{url}\">link</a>"),
        2 => format!("<img srcset=\"{url} 1x, {url} 2x\">"),
        3 => format!("<div style=\"background:url('{url}')\"></div>"),
        _ => format!("<p>{url}</p>"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sign_then_verify_round_trips(
        handle in handle(),
        expiry in NOW..NOW + 10_000_000,
        calls in proptest::sample::subsequence(Call::ALL.to_vec(), 0..=10),
        path in proptest::option::of(".{0,30}"),
        max_size in proptest::option::of(0u64..1 << 40),
        secret in "[ -~]{1,80}",
        task_style in any::<bool>(),
    ) {
        let secret = Secret::new(secret).expect("not empty");
        let limits = PolicyLimits { path: path.clone(), max_size, ..PolicyLimits::default() };
        let policy = Policy { expiry, call: calls.clone(), handle: Some(handle.clone()), limits };
        let credentials = policy.sign(&secret);
        let handle_ref = Handle::parse(&handle).expect("valid");
        let file = FileRef { tasks: vec![], handle: handle_ref };
        let style = if task_style { UrlStyle::Task } else { UrlStyle::Query };
        let url = signed_url("https://cdn.example", &file, Some("dl=1"), &credentials, style);
        let call = calls.first().copied().unwrap_or(Call::Read);
        let decoded = verify_at(&url, &secret, expiry - 1, call).expect("verifies");
        prop_assert_eq!(decoded.handle.as_deref(), Some(handle.as_str()));
        prop_assert_eq!(decoded.limits.path, path);
        prop_assert_eq!(decoded.limits.max_size, max_size);
        prop_assert!(verify_at(&url, &secret, expiry, call).is_err());
        let other = Secret::new("another".into()).expect("not empty");
        prop_assert!(verify_at(&url, &other, expiry - 1, call).is_err());
    }

    #[test]
    fn rewriting_signs_each_cdn_url_once_is_idempotent_and_leaves_the_rest(
        parts in proptest::collection::vec((gallery_url(), any::<u8>()), 1..12),
        chunk in 1usize..64,
    ) {
        let html: String = parts.iter().map(|(url, kind)| element(url.clone(), *kind)).collect();
        let once = rewrite(&html, chunk);
        prop_assert_eq!(&once, &rewrite(&html, html.len()), "chunking changed the output");
        prop_assert_eq!(&rewrite(&once, chunk), &once, "not idempotent");
        for (url, kind) in &parts {
            if url.starts_with("https://example.com/") || url.starts_with("/local/") || kind % 5 == 4 {
                prop_assert!(once.contains(url.as_str()), "{} was changed", url);
            }
        }
        let text_nodes: Vec<&String> = parts.iter().filter(|(_, kind)| kind % 5 == 4).map(|(url, _)| url).collect();
        for candidate in once.split(['"', '\'', ' ', '(', ')', '<', '>']) {
            let candidate = candidate.replace("&amp;", "&");
            if text_nodes.iter().any(|url| **url == candidate) {
                continue;
            }
            if candidate.to_ascii_lowercase().starts_with("https://cdn.filestackcontent.com/") && candidate.contains("signature=") {
                prop_assert_eq!(candidate.matches("policy=").count(), 1, "{}", candidate);
                prop_assert!(!candidate.contains("stale"), "{}", candidate);
                let secret = Secret::new("prop-secret".into()).expect("not empty");
                prop_assert!(verify_at(&candidate, &secret, NOW, Call::Read).is_ok(), "{}", candidate);
            }
        }
    }

    #[test]
    fn parsers_never_panic(input in "\\PC{0,200}") {
        let _ = FileRef::parse(&input);
        let _ = parse_url(&input);
        let _ = DecodedPolicy::decode(&input);
        let signer = site_signer();
        let _ = signer.sign(&input);
        let _ = signer.sign_srcset(&input);
        let _ = signer.sign_css(&input);
        let stripped = strip_client_credentials(&input);
        for pair in stripped.split('&') {
            let name = pair.split('=').next().unwrap_or_default().to_ascii_lowercase();
            prop_assert!(!name.contains("policy") && !name.contains("signature"), "{}", pair);
        }
    }

    #[test]
    fn json_splicing_signs_only_url_values_and_keeps_every_other_byte(
        parts in proptest::collection::vec((gallery_url(), any::<bool>(), "[ \t\r\n]{0,2}"), 1..10),
        chunk in 1usize..32,
    ) {
        let signer = site_signer();
        let json = json_object(&parts, str::to_owned);
        let expected = json_object(&parts, |url| signer.sign(url).unwrap_or_else(|| url.to_owned()));
        let out = splice_json(json.as_bytes(), chunk);
        prop_assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[test]
    fn arbitrary_bytes_pass_the_json_splicer_unchanged(
        bytes in proptest::collection::vec(
            prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'),
                Just(b':'), Just(b','), Just(b'u'), Just(b'd'), Just(b'8'), any::<u8>(),
            ],
            0..300,
        ),
        chunk in 1usize..17,
    ) {
        prop_assert_eq!(splice_json(&bytes, chunk), bytes);
    }

    #[test]
    fn arbitrary_html_never_breaks_the_rewriter(html in "[<>a-z=\"' /:.?&#;()A-Z0-9-]{0,400}") {
        let _ = rewrite(&html, 7);
    }
}

/// Inputs the fuzzer found (`fuzz/`, target `rewrite_attr`): a fragment holding `policy=` and a
/// task named `fsecurity=` each made a signed URL read as carrying two credential sets.
#[test]
fn fuzz_regressions_give_one_credential_set() {
    let signer = site_signer();
    for input in [
        "https://CDN.filestackcontent.com/KW9EJhYtS6y48Whm2S6D?polisya=ctle&sigxature=stale#topckcontent.com/KW9EJh'tS6y4~Whm2S6D?policy=sta\u{16}e&signature=",
        "https://cdn.filestackcontent.com/fsecurity=p:eyJ6,s:ab/KW9Eity=666666666666666666666666666666666666666666p:eyJ9,s=ab/KW9EJhYtS6y48Whm2S6D",
    ] {
        if let Some(out) = signer.sign(input) {
            let sets = out.matches("policy=").count() + out.matches("security=").count();
            assert_eq!(sets, 1, "{out}");
            assert_eq!(signer.sign(&out).as_deref(), Some(&*out));
        }
    }
}

/// A plain source under `https://images.example.org/gallery/`: a few path segments of the
/// characters a file name uses.
fn listed_source() -> impl Strategy<Value = String> {
    proptest::collection::vec("[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,11}", 1..4).prop_map(|segments| {
        let segments: Vec<String> = segments
            .into_iter()
            .map(|s| if s == "." || s == ".." { "x".into() } else { s })
            .collect();
        format!("https://images.example.org/gallery/{}", segments.join("/"))
    })
}

/// Edits a source so that it names another file or host: a character added, removed or
/// changed anywhere after the scheme.
fn edit_of(source: &str, at: usize, kind: u8, with: char) -> Option<String> {
    let start = "https://".len();
    let chars: Vec<char> = source.chars().collect();
    let mut edited = chars.clone();
    match kind % 3 {
        // Anywhere after the scheme, the very end included.
        0 => edited.insert(start + at % (chars.len() - start + 1), with),
        1 => {
            edited.remove(start + at % (chars.len() - start));
        }
        _ => edited[start + at % (chars.len() - start)] = with,
    }
    let edited: String = edited.into_iter().collect();
    (edited != source).then_some(edited)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A page's external source on the route's list is signed, verifies for that source, and no
    /// edit of the source keeps the signature valid.
    #[test]
    fn a_signed_external_source_verifies_and_no_edit_of_it_does(
        source in listed_source(),
        tasks in prop_oneof![Just(""), Just("resize=width:300/"), Just("resize=w:1,h:2/flip/")],
        quoted in any::<bool>(),
        at in any::<usize>(),
        kind in any::<u8>(),
        with in prop_oneof![Just('a'), Just('/'), Just('.'), Just('Z'), Just('-'), Just('@')],
    ) {
        let signer = SiteUrls::fixture(
            "api_key = \"AbCdEfGhIjKlMnOpQrStUvW\"\n\
             external_sources = [\"https://images.example.org/gallery/\"]",
            "prop-secret",
        )
        .at(NOW);
        let written = if quoted { format!("\"{source}\"") } else { source.clone() };
        let url = format!("https://cdn.filestackcontent.com/AbCdEfGhIjKlMnOpQrStUvW/{tasks}{written}");
        let signed = signer.sign(&url).expect("a listed source is signed");
        let secret = Secret::new("prop-secret".into()).expect("not empty");
        prop_assert!(verify_at(&signed, &secret, NOW, Call::Convert).is_ok(), "{}", signed);
        prop_assert_eq!(signer.sign(&signed), Some(signed.clone()), "signing again changes nothing");
        if let Some(edited) = edit_of(&source, at, kind, with) {
            let moved = signed.replace(&source, &edited);
            prop_assert!(
                verify_at(&moved, &secret, NOW, Call::Convert).is_err(),
                "{} still verifies after the source became {}", moved, edited
            );
        }
    }
}

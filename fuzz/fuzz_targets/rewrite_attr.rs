#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use signgate::rewrite::{CdnUrlSigner, SiteUrls};

const NOW: u64 = 1_800_000_000;

fn site_signer() -> Arc<CdnUrlSigner> {
    SiteUrls::fixture("", "prop-secret").at(NOW)
}

static SIGNER: OnceLock<Arc<CdnUrlSigner>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let signer = SIGNER.get_or_init(site_signer);
    if let Some(out) = signer.sign(input) {
        // Credential sets are counted structurally, in what reaches the CDN: path segments that
        // are `security=` tasks (any case) and query parameters named `policy` (any case, decoded).
        // A plain substring count, as first written, fails at once on a `#policy=` fragment or a
        // task such as `fsecurity=...`: see the report for those two artifacts.
        let sent = out.split('#').next().unwrap_or_default();
        let (path, query) = sent.split_once('?').unwrap_or((sent, ""));
        let securities = path
            .split('/')
            .filter(|seg| signgate::filelink::is_security_task(seg))
            .count();
        let policies = query
            .split('&')
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or_default();
                percent_encoding_free_lower(name) == "policy"
            })
            .count();
        assert!(
            policies + securities == 1,
            "expected exactly one credential set, got {policies} policy= and {securities} security=: \
             input {input:?} -> {out:?}"
        );
        let again = signer.sign(&out);
        assert_eq!(
            again.as_deref(),
            Some(out.as_str()),
            "signing is not idempotent for input {input:?}"
        );
    }
    // The HTML attribute path (entity-decoded, cached per bucket): the cached answer is the
    // one signing the decoded value gives, with `&` escaped again.
    let uncached = signer
        .sign(&input.replace("&amp;", "&"))
        .map(|signed| signed.replace('&', "&amp;"));
    for _ in 0..2 {
        let attribute = signer.sign_html_attribute(input);
        assert_eq!(
            attribute.as_deref().map(String::as_str),
            uncached.as_deref(),
            "attribute signing differs for input {input:?}"
        );
    }
    let _ = signer.sign_srcset(input);
    let _ = signer.sign_css(input);
});

/// Lower-cases `name` after decoding `%XX` escapes (enough for ASCII parameter names).
fn percent_encoding_free_lower(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            ) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

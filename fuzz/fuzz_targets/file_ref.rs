#![no_main]

use libfuzzer_sys::fuzz_target;
use signgate::filelink::{FileRef, strip_client_credentials};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = FileRef::parse(input);
    let stripped = strip_client_credentials(input);
    // Same phrasing as `parsers_never_panic` in tests/it/properties.rs.
    for pair in stripped.split('&') {
        let name = pair
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !name.contains("policy") && !name.contains("signature"),
            "credential parameter survived stripping: {pair:?} (input {input:?}, stripped {stripped:?})"
        );
    }
});

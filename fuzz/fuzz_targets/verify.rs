#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signgate::policy::{Call, DecodedPolicy};
use signgate::secret::Secret;
use signgate::verify::verify_at;

static SECRET: OnceLock<Secret> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let secret = SECRET.get_or_init(|| Secret::new("s".into()).expect("not empty"));
    let _ = verify_at(input, secret, 1_800_000_000, Call::Read);
    let _ = DecodedPolicy::decode(input);
});

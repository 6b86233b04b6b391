#![no_main]

use libfuzzer_sys::fuzz_target;
use signgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml_str(input, |_| Some("x".to_string()));
});

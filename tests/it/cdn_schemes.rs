//! Loading `tests/data/cdn-schemes.json`, the CDN and storage vectors made by the vendors'
//! SDKs (`../shared/vectors/README.md`), for the scheme test files.

use serde_json::Value;

/// One scheme's entry (`cloudfront`, `akamai_edgeauth`, …): its SDK facts and its `cases`.
pub fn scheme(name: &str) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = std::fs::read_to_string(format!("{root}/tests/data/cdn-schemes.json"))
        .expect("tests/data/cdn-schemes.json is in the repository");
    // CI has ../shared beside the clone: the copy must not drift from the source of truth.
    if let Ok(shared) =
        std::fs::read_to_string(format!("{root}/../shared/vectors/cdn-schemes.json"))
    {
        assert_eq!(
            copy, shared,
            "tests/data copy differs from ../shared/vectors"
        );
    }
    let mut all: Value = serde_json::from_str(&copy).expect("vectors are JSON");
    all["schemes"][name].take()
}

/// The scheme's cases, checking there are as many as the README counts.
pub fn cases(scheme: &Value, count: usize) -> Vec<Value> {
    let cases = scheme["cases"].as_array().expect("cases is a list").clone();
    assert_eq!(cases.len(), count);
    cases
}

/// A string field, named in the panic when it is not one.
pub fn text<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {}", entry["name"]))
}

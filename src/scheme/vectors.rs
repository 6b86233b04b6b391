//! The vendors' SDK vectors for the schemes' unit tests (`tests/data/cdn-schemes.json`).

use serde_json::Value;

/// The cases of `scheme`, checked to be `count`: a case dropped from the file fails the test.
pub fn cases(scheme: &str, count: usize) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cdn-schemes.json");
    let text = std::fs::read_to_string(path).expect("tests/data/cdn-schemes.json is here");
    let root: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let cases = root["schemes"][scheme]["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{scheme} has cases"))
        .clone();
    assert_eq!(cases.len(), count, "{scheme}");
    cases
}

/// The case of `scheme` called `name`.
pub fn case(scheme: &str, count: usize, name: &str) -> Value {
    cases(scheme, count)
        .into_iter()
        .find(|case| case["name"] == name)
        .unwrap_or_else(|| panic!("{scheme} has no case {name}"))
}

/// A string field of a case.
pub fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {}", case["name"]))
}

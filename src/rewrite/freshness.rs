//! How long a cache may keep an answer whose URLs the gateway signed.

/// `Cache-Control` for a rewritten answer: the site's directives, with every freshness lifetime
/// capped to `limit` seconds (when the signatures in it expire) and nothing that would let a
/// cache serve it stale.
pub fn cap_cache_control(upstream: Option<&str>, limit: u64) -> String {
    let mut directives: Vec<String> = Vec::new();
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in upstream.unwrap_or_default().split(',') {
        let directive = directive.trim();
        let name = directive
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let seconds = || {
            directive
                .split_once('=')
                .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
        };
        match name.as_str() {
            "" => {}
            "no-store" => return "no-store".to_owned(),
            "max-age" => max_age = seconds(),
            "s-maxage" => s_maxage = seconds(),
            "immutable" | "stale-while-revalidate" | "stale-if-error" => {}
            _ => directives.push(directive.to_owned()),
        }
    }
    let max_age = max_age.map_or(limit, |m| m.min(limit));
    directives.push(format!("max-age={max_age}"));
    if let Some(s) = s_maxage {
        directives.push(format!("s-maxage={}", s.min(limit)));
    }
    directives.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetimes_are_capped_to_the_signatures() {
        assert_eq!(cap_cache_control(None, 3600), "max-age=3600");
        assert_eq!(
            cap_cache_control(Some("public, max-age=86400, immutable"), 3600),
            "public, max-age=3600"
        );
        assert_eq!(
            cap_cache_control(Some("private, max-age=60"), 3600),
            "private, max-age=60"
        );
        assert_eq!(
            cap_cache_control(Some("s-maxage=99999, stale-while-revalidate=30"), 100),
            "max-age=100, s-maxage=100"
        );
        assert_eq!(cap_cache_control(Some("no-store"), 100), "no-store");
        assert_eq!(
            cap_cache_control(Some("no-cache"), 100),
            "no-cache, max-age=100"
        );
    }
}

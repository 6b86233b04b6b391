//! The `*` and `?` wildcards of CloudFront policy resources and Akamai ACLs, matched as the
//! CDNs match them: on the whole text, without special meaning for `/`.

/// Whether `text` matches `pattern`, where `*` stands for any run of bytes (none included) and
/// `?` for exactly one; everything else matches itself. URLs are ASCII once percent-encoded, so
/// matching bytes rather than characters changes nothing for them.
///
/// Linear backtracking to the last `*`, so a hostile pattern costs at most
/// `pattern.len() * text.len()` steps rather than an exponential search.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_match_any_run_and_question_marks_one_byte() {
        assert!(matches(
            "https://d.net/videos/*",
            "https://d.net/videos/2026/a.mp4"
        ));
        assert!(matches("https://d.net/videos/*", "https://d.net/videos/"));
        assert!(!matches(
            "https://d.net/videos/*",
            "https://d.net/video/a.mp4"
        ));
        assert!(matches("/live/*/index.m3u8", "/live/a/b/index.m3u8"));
        assert!(!matches("/live/*/index.m3u8", "/live/a/b/index.m3u"));
        assert!(matches("/a?c", "/abc"));
        assert!(!matches("/a?c", "/ac"));
        assert!(matches("*", ""));
        assert!(matches("/exact", "/exact"));
        assert!(!matches("/exact", "/exact/more"));
        assert!(!matches("", "/x"));
    }

    #[test]
    fn a_hostile_pattern_stays_linear_in_each_input() {
        let text = "a".repeat(4096);
        let pattern = format!("{}b", "*a".repeat(64));
        assert!(!matches(&pattern, &text));
    }
}

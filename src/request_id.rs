//! `X-Request-Id`: the client's id kept when it is sane, one made when it is not; the same id
//! goes upstream, back to the client and into the access log.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The header that carries the id both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client id kept, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// One request's id: 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII characters (`!` to `~`), so it
/// is a valid header value and one token in a text log line (no space to forge a field with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id, if it is sane.
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| (b'!'..=b'~').contains(b));
        sane.then(|| Self(value.clone()))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction: the fallback is never taken.
        self.0.to_str().unwrap_or("-")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes request ids: 32 lowercase hex digits, a random half fixed per generator and a counter
/// (from a random start) put through a bijective mix. Ids never repeat within a generator, a
/// replica's ids differ from another's but for a 2⁻⁶⁴ chance, and an id does not tell how many
/// requests went before it. One random read at start instead of one per request: a syscall
/// per request is what this proxy's time goes to (README "Performance").
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    /// A generator seeded from the operating system's randomness (or, failing that, the time
    /// and the process id: ids stay unique in this process either way).
    pub fn new() -> Self {
        let mut seed = [0u8; 16];
        if getrandom::fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            seed = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        }
        let (prefix, start) = seed.split_at(8);
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        Self {
            prefix: word(prefix),
            next: AtomicU64::new(word(start)),
        }
    }

    /// A new id.
    pub fn make(&self) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        // Written digit by digit: `format!` took most of the id's cost on the request path.
        let words = [self.prefix, mix(count)];
        let mut text = [0u8; 32];
        for (digit, slot) in text.iter_mut().enumerate() {
            let shift = 60 - 4 * (digit % 16);
            *slot = HEX[((words[digit / 16] >> shift) & 0xf) as usize];
        }
        // Hex digits are a valid header value.
        RequestId(HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-")))
    }

    /// The id of a request with `headers`: its one `X-Request-Id` when that is sane, a new one
    /// otherwise (none, several, empty, too long, or holding spaces, controls or non-ASCII).
    pub fn for_request(&self, headers: &HeaderMap) -> RequestId {
        let mut values = headers.get_all(&X_REQUEST_ID).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => RequestId::from_client(value).unwrap_or_else(|| self.make()),
            _ => self.make(),
        }
    }
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct counts give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                X_REQUEST_ID.clone(),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        let ids = RequestIds::new();
        for id in [
            &b"abc-123"[..],
            b"Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8",
            &[b'x'; MAX_REQUEST_ID_LEN],
        ] {
            assert_eq!(ids.for_request(&headers(&[id])).as_str().as_bytes(), id);
        }
    }

    #[test]
    fn an_insane_client_id_is_replaced() {
        let ids = RequestIds::new();
        let long = [b'x'; MAX_REQUEST_ID_LEN + 1];
        for sent in [
            headers(&[b""]),
            headers(&[&long]),
            headers(&[b"a b"]),
            headers(&[b"a\tb"]),
            headers(&[b"caf\xc3\xa9"]),
            headers(&[b"one", b"two"]),
            HeaderMap::new(),
        ] {
            let id = ids.for_request(&sent);
            assert_eq!(id.as_str().len(), 32, "{sent:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn a_made_id_is_the_prefix_then_the_mixed_count_in_hex() {
        let ids = RequestIds::new();
        let count = ids.next.load(Ordering::Relaxed);
        assert_eq!(
            ids.make().as_str(),
            format!("{:016x}{:016x}", ids.prefix, mix(count))
        );
    }

    #[test]
    fn made_ids_do_not_repeat() {
        let ids = RequestIds::new();
        let made: std::collections::HashSet<String> =
            (0..10_000).map(|_| ids.make().to_string()).collect();
        assert_eq!(made.len(), 10_000);
        assert_ne!(RequestIds::new().make(), RequestIds::new().make());
    }

    #[test]
    fn the_mix_is_a_bijection_near_wraparound() {
        let mixed: std::collections::HashSet<u64> =
            (u64::MAX - 500..=u64::MAX).chain(0..500).map(mix).collect();
        assert_eq!(mixed.len(), 1001);
    }
}

//! Compressing rewritten answers on the way out: which coding a client's `Accept-Encoding`
//! asks for, and an [`Encoder`] that compresses each piece and flushes it, so a page streamed
//! in pieces still arrives piece by piece.
//!
//! Levels are chosen for throughput, as nginx and Caddy choose them for dynamic content: every
//! answer is compressed as it streams, once per request, never cached. Memory is bounded per
//! answer whatever its length; measured on x86-64 (allocator counts and `ZSTD_sizeof_CCtx`,
//! HTML of CDN picture lists from 10 KB to 16 MiB, pushed in 64 KiB pieces):
//! - br, quality [`BROTLI_QUALITY`], window [`BROTLI_LGWIN`]: 0.7 MiB for a 10 KB page, 2.5 MiB
//!   for any page past about 64 KiB (the ring buffer is twice the window, plus hash tables).
//! - zstd, level [`ZSTD_LEVEL`] (its 2 MiB window): 3.5 MiB, taken at the first piece.
//! - gzip, level [`GZIP_LEVEL`] (32 KiB window): 0.35 MiB.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;

/// Brotli quality 4: on the HTML measured above, 13 % smaller than gzip 6 at gzip 4's speed;
/// quality 5 took about twice the CPU for it.
pub const BROTLI_QUALITY: u32 = 4;
/// A 512 KiB window (2^19), nginx's `brotli_window` default. The reference encoder's 4 MiB
/// (22) took 9.5 MiB per answer instead of 2.5 and gave pages under 4 MiB not one byte less
/// (measured: identical output to 300 KB, a 1 MiB page 1 % larger at 22 than at 19).
pub const BROTLI_LGWIN: u32 = 19;
/// zstd level 3, libzstd's own default: faster than gzip 4 and 6 % smaller than gzip 6.
pub const ZSTD_LEVEL: i32 = 3;
/// gzip level 4: zlib's default (6) ratio on HTML to within a fraction of a percent, at about
/// half its CPU; nginx's `gzip_comp_level` defaults to 1, zlib to 6.
pub const GZIP_LEVEL: u32 = 4;

/// What the encoders of one worker's compressed answers may take together. An answer that
/// would take more leaves uncompressed: a client cannot make signgate hold encoder state for
/// thousands of slow downloads.
pub const ENCODER_BUDGET: usize = 64 << 20;

/// Bytes the brotli writer compresses into before copying them to the answer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// A `Content-Encoding` signgate compresses in, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
    /// `gzip`.
    Gzip,
}

impl Coding {
    /// Every coding, in order of preference when a client weighs several the same.
    pub const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The coding's `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The most memory one encoder of this coding takes, as measured above (rounded up).
    pub fn memory(self) -> usize {
        match self {
            Coding::Brotli => 5 << 19,
            Coding::Zstd => 7 << 19,
            Coding::Gzip => 3 << 17,
        }
    }

    /// Whether `token` in an `Accept-Encoding` names this coding.
    fn is_named(self, token: &str) -> bool {
        token.eq_ignore_ascii_case(self.as_str())
            || (self == Coding::Gzip && token.eq_ignore_ascii_case("x-gzip"))
    }

    /// The coding to answer in for a request's `Accept-Encoding` field values (RFC 9110
    /// section 12.5.3): of br, zstd and gzip, one with the highest non-zero q-value (a coding
    /// not named takes the weight of `*`), br before zstd before gzip on a tie. `None`: send
    /// identity, as for a request with no `Accept-Encoding`. An element whose weight is not a
    /// valid q-value is ignored.
    pub fn preferred<'a>(accept_encoding: impl IntoIterator<Item = &'a str>) -> Option<Coding> {
        let mut named: [Option<u16>; 3] = [None; 3];
        let mut any = None;
        for element in accept_encoding.into_iter().flat_map(|v| v.split(',')) {
            let mut params = element.split(';');
            let token = params.next().unwrap_or_default().trim();
            if token.is_empty() {
                continue;
            }
            let Some(weight) = weight(params) else {
                continue;
            };
            if token == "*" {
                any = Some(weight);
            } else if let Some(i) = Coding::ALL.iter().position(|c| c.is_named(token)) {
                named[i] = Some(weight);
            }
        }
        let mut best: Option<(Coding, u16)> = None;
        for (coding, weight) in Coding::ALL.into_iter().zip(named) {
            let weight = weight.or(any).unwrap_or(0);
            if weight > 0 && best.is_none_or(|(_, top)| weight > top) {
                best = Some((coding, weight));
            }
        }
        best.map(|(coding, _)| coding)
    }
}

/// An element's weight in thousandths, from its parameters: 1000 without `q`, `None` when `q`
/// is not a q-value.
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut weight = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            weight = qvalue(value.trim())?;
        }
    }
    Some(weight)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One worker's memory for encoders ([`ENCODER_BUDGET`]): each compressed answer holds its
/// coding's [`Coding::memory`] while it streams.
#[derive(Debug)]
pub struct EncoderBudget {
    available: AtomicUsize,
}

impl EncoderBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            available: AtomicUsize::new(bytes),
        }
    }

    /// Room for one encoder of `coding`, given back when the share is dropped; `None` when the
    /// budget has not that much left.
    pub fn take(self: &Arc<Self>, coding: Coding) -> Option<EncoderShare> {
        let bytes = coding.memory();
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .ok()?;
        Some(EncoderShare {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes left.
    pub fn available(&self) -> usize {
        self.available.load(Ordering::Acquire)
    }
}

/// One answer's share of an [`EncoderBudget`], given back on drop.
#[derive(Debug)]
pub struct EncoderShare {
    budget: Arc<EncoderBudget>,
    bytes: usize,
}

impl Drop for EncoderShare {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// Compresses a body piece by piece: each [`Encoder::push`] returns the piece compressed and
/// flushed (a sync flush), so the client can decode everything sent so far.
pub struct Encoder(Codec);

enum Codec {
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(GzEncoder<Vec<u8>>),
}

impl Encoder {
    /// An encoder for `coding` at its level above.
    pub fn new(coding: Coding) -> io::Result<Self> {
        Ok(Self(match coding {
            Coding::Brotli => Codec::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
            Coding::Zstd => Codec::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?),
            Coding::Gzip => Codec::Gzip(GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
        }))
    }

    /// Compresses `piece` and flushes: the bytes returned decode to everything pushed so far.
    pub fn push(&mut self, piece: &[u8]) -> io::Result<Vec<u8>> {
        match &mut self.0 {
            Codec::Brotli(w) => flushed(w.as_mut(), piece),
            Codec::Zstd(w) => flushed(w, piece),
            Codec::Gzip(w) => flushed(w, piece),
        }
    }

    /// Ends the stream: its last bytes (the final block and any checksum).
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self.0 {
            // Writing into a `Vec` cannot fail, so the writer's swallowing of errors on
            // closing loses nothing.
            Codec::Brotli(w) => Ok(w.into_inner()),
            Codec::Zstd(w) => w.finish(),
            Codec::Gzip(w) => w.finish(),
        }
    }
}

/// Writes `piece` to an encoder that writes into a `Vec`, flushes, and takes what it wrote.
fn flushed<W: Write + Output>(encoder: &mut W, piece: &[u8]) -> io::Result<Vec<u8>> {
    encoder.write_all(piece)?;
    encoder.flush()?;
    Ok(std::mem::take(encoder.output()))
}

/// The `Vec` an encoder writes into.
trait Output {
    fn output(&mut self) -> &mut Vec<u8>;
}

impl Output for brotli::CompressorWriter<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl Output for zstd::stream::write::Encoder<'static, Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl Output for GzEncoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_budget_holds_what_encoders_take_until_they_are_dropped() {
        let budget = Arc::new(EncoderBudget::new(Coding::Zstd.memory() * 2 + 1));
        let first = budget.take(Coding::Zstd).expect("room");
        let second = budget.take(Coding::Zstd).expect("room");
        assert!(budget.take(Coding::Zstd).is_none(), "full");
        assert!(budget.take(Coding::Gzip).is_none(), "one byte left");
        drop(first);
        assert!(budget.take(Coding::Brotli).is_some(), "given back");
        drop(second);
        assert_eq!(budget.available(), Coding::Zstd.memory() * 2 + 1);
    }

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Brotli => brotli::Decompressor::new(data, 4096).read_to_end(&mut out),
            Coding::Zstd => zstd::stream::read::Decoder::new(data)
                .expect("decoder")
                .read_to_end(&mut out),
            Coding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
        }
        .expect("decodes");
        out
    }

    /// Decodes what arrived so far of a stream that has not ended, as a client does while the
    /// rest is on its way.
    fn decode_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        match coding {
            Coding::Brotli => {
                let mut r = brotli::Decompressor::new(data, 4096);
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Coding::Zstd => {
                let mut r = zstd::stream::read::Decoder::new(data).expect("decoder");
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Coding::Gzip => {
                let mut r = flate2::read::GzDecoder::new(data);
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
        out
    }

    #[test]
    fn each_piece_is_flushed_so_what_was_sent_decodes_before_the_rest() {
        let first = b"<html><body><p>first part</p>".repeat(3);
        let second = b"<p>second part</p></body></html>".repeat(200);
        for coding in Coding::ALL {
            let mut encoder = Encoder::new(coding).expect("encoder");
            let mut sent = encoder.push(&first).expect("first");
            assert_eq!(decode_prefix(coding, &sent), first, "{coding:?}");
            sent.extend(encoder.push(&second).expect("second"));
            sent.extend(encoder.finish().expect("finish"));
            assert_eq!(
                decode(coding, &sent),
                [first.clone(), second.clone()].concat()
            );
        }
    }

    #[test]
    fn the_best_weighted_coding_is_chosen_br_zstd_gzip_on_a_tie() {
        let best = |value: &str| Coding::preferred([value]);
        assert_eq!(best("gzip, deflate, br, zstd"), Some(Coding::Brotli));
        assert_eq!(best("gzip, zstd"), Some(Coding::Zstd));
        assert_eq!(best("GZIP"), Some(Coding::Gzip));
        assert_eq!(best("x-gzip"), Some(Coding::Gzip));
        assert_eq!(best("gzip;q=1, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(best("br;q=0, gzip;q=0.001"), Some(Coding::Gzip));
        assert_eq!(best("br ; Q=0.9, zstd;q=0.95"), Some(Coding::Zstd));
        assert_eq!(best("*"), Some(Coding::Brotli));
        assert_eq!(best("br;q=0, *;q=0.5"), Some(Coding::Zstd));
        assert_eq!(best("*;q=0.2, gzip;q=0.3"), Some(Coding::Gzip));
        assert_eq!(best("br;q=0, zstd;q=0, gzip;q=0"), None);
        assert_eq!(best("deflate, identity"), None);
        assert_eq!(best(""), None);
        assert_eq!(best("*;q=0"), None);
        // Not q-values: the element is ignored.
        assert_eq!(best("br;q=2, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(best("br;q=0.5000, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(best("br;q=1.5, br;q=abc"), None);
        // Several field lines count as one list.
        assert_eq!(
            Coding::preferred(["gzip;q=0.5", "zstd;q=0.8"]),
            Some(Coding::Zstd)
        );
        assert_eq!(Coding::preferred([]), None);
    }

    #[test]
    fn q_values_are_read_to_the_thousandth() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0.001"), Some(1));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue("0.0001"), None);
        assert_eq!(qvalue(".5"), None);
        assert_eq!(qvalue("-0"), None);
        assert_eq!(qvalue(""), None);
    }
}

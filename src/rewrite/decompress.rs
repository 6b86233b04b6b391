//! Streaming decompression of upstream bodies (gzip, deflate, br, zstd) so they can be
//! rewritten, in bounded slices: one small compressed chunk may decode to gigabytes (a
//! decompression bomb), so output comes out at most [`SLICE`] bytes at a time and the caller
//! sends each slice on before asking for the next.

use std::io::Write;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::write::{GzDecoder, ZlibDecoder};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

/// Most decoded bytes one step produces.
pub const SLICE: usize = 64 * 1024;

/// The `Content-Encoding`s signgate can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No encoding.
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate` (zlib-wrapped).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// Reads a `Content-Encoding` value; `None` for encodings signgate cannot undo (or stacks of
    /// several).
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Some(Encoding::Identity),
            Some("gzip" | "x-gzip") => Some(Encoding::Gzip),
            Some("deflate") => Some(Encoding::Deflate),
            Some("br") => Some(Encoding::Brotli),
            Some("zstd") => Some(Encoding::Zstd),
            Some(_) => None,
        }
    }
}

type Brotli = BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>;

/// Largest zstd window accepted, as a power of two: 8 MiB, the most RFC 9659 lets an HTTP
/// `zstd` encoder use. A frame asking for more is refused instead of taking its memory; one
/// that does not takes its window plus up to about 0.5 MiB of decoder state per answer.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

enum Codec {
    Identity,
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
    Brotli {
        state: Box<Brotli>,
        ended: bool,
    },
    /// The decoder is made on first use (making one can fail); `ended`: at the end of a frame,
    /// where the stream may end (or another frame begin).
    Zstd {
        decoder: Option<ZstdDecoder<'static>>,
        ended: bool,
    },
}

/// Decodes a body fed chunk by chunk, handing out the decoded bytes in slices of at most
/// [`SLICE`] bytes: memory stays bounded whatever the compression ratio.
pub struct Decompressor {
    codec: Codec,
    /// Compressed bytes fed but not yet decoded.
    input: Vec<u8>,
    /// How much of `input` the codec has taken.
    taken: usize,
}

impl Decompressor {
    /// A decompressor for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        let codec = match encoding {
            Encoding::Identity => Codec::Identity,
            Encoding::Gzip => Codec::Gzip(GzDecoder::new(Vec::new())),
            Encoding::Deflate => Codec::Deflate(ZlibDecoder::new(Vec::new())),
            Encoding::Brotli => Codec::Brotli {
                state: Box::new(BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                )),
                ended: false,
            },
            Encoding::Zstd => Codec::Zstd {
                decoder: None,
                ended: false,
            },
        };
        Self {
            codec,
            input: Vec::new(),
            taken: 0,
        }
    }

    /// Adds compressed bytes to decode.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.input.drain(..self.taken);
        self.taken = 0;
        self.input.extend_from_slice(chunk);
    }

    /// The next slice of decoded bytes from what was fed, or `None` when it needs more input.
    pub fn next_slice(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let pending = &self.input[self.taken..];
        match &mut self.codec {
            Codec::Identity => {
                let n = pending.len().min(SLICE);
                let out = pending[..n].to_vec();
                self.taken += n;
                Ok((n > 0).then_some(out))
            }
            Codec::Gzip(d) => {
                let (taken, out) = step_flate(d, pending)?;
                self.taken += taken;
                Ok(out)
            }
            Codec::Deflate(d) => {
                let (taken, out) = step_flate(d, pending)?;
                self.taken += taken;
                Ok(out)
            }
            Codec::Brotli { state, ended } => {
                let (taken, out) = step_brotli(state, ended, pending)?;
                self.taken += taken;
                Ok(out)
            }
            Codec::Zstd { decoder, ended } => {
                let decoder = match decoder {
                    Some(decoder) => decoder,
                    None => decoder.insert(zstd_decoder()?),
                };
                let (taken, out) = step_zstd(decoder, ended, pending)?;
                self.taken += taken;
                Ok(out)
            }
        }
    }

    /// The input has ended: the last decoded bytes (once every slice was taken), or an error
    /// if the stream was cut short.
    pub fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(slice) = self.next_slice()? {
            out.extend(slice);
        }
        match &mut self.codec {
            Codec::Identity => {}
            Codec::Gzip(d) => {
                d.try_finish()?;
                out.extend(std::mem::take(d.get_mut()));
            }
            Codec::Deflate(d) => {
                d.try_finish()?;
                out.extend(std::mem::take(d.get_mut()));
            }
            Codec::Brotli { ended, .. } => {
                if !*ended {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "brotli stream cut short",
                    ));
                }
            }
            Codec::Zstd { ended, .. } => {
                if !*ended {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "zstd stream cut short",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Feeds `chunk` and returns everything it decodes to, however large: for callers that
    /// hold whole bodies anyway (tests, benches).
    pub fn push(&mut self, chunk: &[u8]) -> std::io::Result<Vec<u8>> {
        self.feed(chunk);
        let mut out = Vec::new();
        while let Some(slice) = self.next_slice()? {
            out.extend(slice);
        }
        Ok(out)
    }
}

/// One bounded step of a flate2 writer: a single `write` decodes into the writer's own 32 KiB
/// buffer, so one call never produces more than that (plus what the previous call left).
fn step_flate<W: Write + FlateOutput>(
    decoder: &mut W,
    pending: &[u8],
) -> std::io::Result<(usize, Option<Vec<u8>>)> {
    let mut taken = 0;
    loop {
        let out = std::mem::take(decoder.output());
        if !out.is_empty() {
            return Ok((taken, Some(out)));
        }
        if taken == pending.len() {
            return Ok((taken, None));
        }
        let n = decoder.write(&pending[taken..])?;
        if n == 0 {
            // The stream ended before its input did: what follows is not part of it.
            let out = std::mem::take(decoder.output());
            return Ok((pending.len(), (!out.is_empty()).then_some(out)));
        }
        taken += n;
        if taken == pending.len() {
            // A write leaves its own output in the writer's buffer until the next one: with no
            // more input here, that would hold a streamed page back by a whole piece.
            decoder.flush()?;
        }
    }
}

/// Access to the `Vec` a flate2 writer decodes into.
trait FlateOutput {
    fn output(&mut self) -> &mut Vec<u8>;
}

impl FlateOutput for GzDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl FlateOutput for ZlibDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

/// One bounded step of the brotli decoder: at most [`SLICE`] bytes out.
fn step_brotli(
    state: &mut Brotli,
    ended: &mut bool,
    pending: &[u8],
) -> std::io::Result<(usize, Option<Vec<u8>>)> {
    if *ended {
        // Bytes after the end of the stream are not part of it.
        return Ok((pending.len(), None));
    }
    let mut out = vec![0u8; SLICE];
    let mut available_in = pending.len();
    let mut input_offset = 0;
    let mut available_out = SLICE;
    let mut output_offset = 0;
    let mut total_out = 0;
    let result = BrotliDecompressStream(
        &mut available_in,
        &mut input_offset,
        pending,
        &mut available_out,
        &mut output_offset,
        &mut out,
        &mut total_out,
        state,
    );
    match result {
        BrotliResult::ResultFailure => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid brotli stream",
            ));
        }
        BrotliResult::ResultSuccess => *ended = true,
        BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {}
    }
    out.truncate(output_offset);
    Ok((input_offset, (!out.is_empty()).then_some(out)))
}

/// A zstd decoder that refuses windows over [`ZSTD_WINDOW_LOG_MAX`].
fn zstd_decoder() -> std::io::Result<ZstdDecoder<'static>> {
    let mut decoder = ZstdDecoder::new()?;
    decoder.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
    Ok(decoder)
}

/// One bounded step of the zstd decoder: at most [`SLICE`] bytes out. The decoder keeps what
/// did not fit for the next step, which is asked for even when all input was taken.
fn step_zstd(
    decoder: &mut ZstdDecoder<'static>,
    ended: &mut bool,
    pending: &[u8],
) -> std::io::Result<(usize, Option<Vec<u8>>)> {
    let mut out = vec![0u8; SLICE];
    let mut input = InBuffer::around(pending);
    let mut output = OutBuffer::around(&mut out[..]);
    loop {
        let (read, written) = (input.pos(), output.pos());
        let hint = decoder.run(&mut input, &mut output)?;
        if input.pos() == read && output.pos() == written {
            // Nothing to do (between frames, or waiting for input): where it stands holds.
            break;
        }
        // Zero: a frame ended and all it decoded to is out.
        *ended = hint == 0;
        // A step may take input (a frame header) and give nothing yet: go on while input
        // remains, so `None` always means "all input taken".
        if output.pos() > 0 || input.pos() == pending.len() {
            break;
        }
    }
    let (taken, written) = (input.pos(), output.pos());
    out.truncate(written);
    Ok((taken, (!out.is_empty()).then_some(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).expect("write");
        gz.finish().expect("finish")
    }

    /// 256 MiB of zeros in a few hundred bytes, made with Python's `brotli` 1.2.1:
    /// `brotli.compress(b"\0" * (256 << 20), quality=5, lgwin=22)`.
    const BROTLI_BOMB: &[u8] = include_bytes!("../../tests/data/zeros-256MiB.br");

    #[test]
    fn gzip_and_deflate_decode_in_pieces() {
        let text = b"<html>".repeat(1000);
        let gz = gzip(&text);
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&text).expect("write");
        let zl = zl.finish().expect("finish");
        for (encoding, data) in [(Encoding::Gzip, gz), (Encoding::Deflate, zl)] {
            let mut d = Decompressor::new(encoding);
            let mut out = Vec::new();
            for piece in data.chunks(7) {
                out.extend(d.push(piece).expect("decodes"));
            }
            out.extend(d.finish().expect("complete"));
            assert_eq!(out, text);
        }
    }

    /// `len` zeros in one zstd frame: a few KiB.
    fn zstd_zeros(len: u64) -> Vec<u8> {
        use std::io::Read;
        zstd::stream::encode_all(std::io::repeat(0).take(len), 3).expect("zstd")
    }

    #[test]
    fn a_bomb_comes_out_in_bounded_slices() {
        let zeros = 16 * 1024 * 1024;
        for (encoding, data, expected) in [
            (Encoding::Gzip, gzip(&vec![0u8; zeros]), zeros),
            (Encoding::Brotli, BROTLI_BOMB.to_vec(), 256 << 20),
            (Encoding::Zstd, zstd_zeros(64 << 20), 64 << 20),
        ] {
            assert!(data.len() < 100 * 1024, "{encoding:?}: {}", data.len());
            let mut d = Decompressor::new(encoding);
            d.feed(&data);
            let mut total = 0;
            let mut largest = 0;
            while let Some(slice) = d.next_slice().expect("decodes") {
                largest = largest.max(slice.len());
                total += slice.len();
            }
            total += d.finish().expect("complete").len();
            assert_eq!(total, expected, "{encoding:?}");
            assert!(largest <= SLICE, "{encoding:?}: a slice of {largest} bytes");
        }
    }

    #[test]
    fn a_cut_stream_is_an_error() {
        let data = BROTLI_BOMB;
        let mut d = Decompressor::new(Encoding::Brotli);
        d.feed(&data[..data.len() / 2]);
        while d.next_slice().expect("decodes so far").is_some() {}
        assert!(d.finish().is_err());
        let data = gzip(&b"<p>".repeat(10_000));
        let mut d = Decompressor::new(Encoding::Gzip);
        d.push(&data[..data.len() / 2]).expect("decodes so far");
        assert!(d.finish().is_err());
        let data = zstd_zeros(1 << 20);
        let mut d = Decompressor::new(Encoding::Zstd);
        d.push(&data[..data.len() / 2]).expect("decodes so far");
        assert!(d.finish().is_err());
    }

    #[test]
    fn zstd_frames_decode_in_pieces_one_after_another() {
        let text = b"<html>".repeat(1000);
        let frame = zstd::stream::encode_all(&text[..], 3).expect("zstd");
        let two = [frame.clone(), frame].concat();
        let mut d = Decompressor::new(Encoding::Zstd);
        let mut out = Vec::new();
        for piece in two.chunks(7) {
            out.extend(d.push(piece).expect("decodes"));
        }
        out.extend(d.finish().expect("complete"));
        assert_eq!(out, [text.clone(), text].concat());
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused() {
        use zstd::stream::raw::CParameter;
        let frame = |window_log| {
            let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
            z.set_parameter(CParameter::WindowLog(window_log))
                .expect("window");
            z.write_all(b"<p>hello</p>").expect("write");
            z.finish().expect("finish")
        };
        let mut d = Decompressor::new(Encoding::Zstd);
        assert_eq!(
            d.push(&frame(23)).expect("8 MiB is allowed"),
            b"<p>hello</p>"
        );
        let mut d = Decompressor::new(Encoding::Zstd);
        assert!(d.push(&frame(24)).is_err());
    }

    #[test]
    fn encodings_are_read_from_the_header() {
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some("GZIP")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("br")), Some(Encoding::Brotli));
        assert_eq!(Encoding::from_header(Some("gzip, br")), None);
        assert_eq!(Encoding::from_header(Some("zstd")), Some(Encoding::Zstd));
        assert_eq!(Encoding::from_header(Some("compress")), None);
    }
}

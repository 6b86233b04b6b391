//! Streaming decompression of upstream bodies so they can be rewritten.

use std::io::Write;

use flate2::write::{GzDecoder, ZlibDecoder};

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
            Some(_) => None,
        }
    }
}

/// Decodes chunk by chunk; output comes out as soon as the decoder has it.
pub enum Decompressor {
    /// Passes bytes through.
    Identity,
    /// gzip.
    Gzip(GzDecoder<Vec<u8>>),
    /// zlib.
    Deflate(ZlibDecoder<Vec<u8>>),
    /// brotli.
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
}

impl Decompressor {
    /// A decompressor for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Identity => Decompressor::Identity,
            Encoding::Gzip => Decompressor::Gzip(GzDecoder::new(Vec::new())),
            Encoding::Deflate => Decompressor::Deflate(ZlibDecoder::new(Vec::new())),
            Encoding::Brotli => Decompressor::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(Vec::new(), 16 * 1024),
            )),
        }
    }

    /// Feeds compressed bytes; returns what decoded so far.
    pub fn push(&mut self, chunk: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Decompressor::Identity => Ok(chunk.to_vec()),
            Decompressor::Gzip(d) => {
                d.write_all(chunk)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decompressor::Deflate(d) => {
                d.write_all(chunk)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decompressor::Brotli(d) => {
                d.write_all(chunk)?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    /// Ends the stream; a truncated stream is an error.
    pub fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Decompressor::Identity => Ok(Vec::new()),
            Decompressor::Gzip(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decompressor::Deflate(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decompressor::Brotli(d) => {
                d.close()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_deflate_decode_in_pieces() {
        let text = b"<html>".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).expect("write");
        let gz = gz.finish().expect("finish");
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

    #[test]
    fn encodings_are_read_from_the_header() {
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some("GZIP")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("br")), Some(Encoding::Brotli));
        assert_eq!(Encoding::from_header(Some("gzip, br")), None);
        assert_eq!(Encoding::from_header(Some("zstd")), None);
    }
}

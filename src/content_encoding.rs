//! Compressed request bodies: which content codings a request's `Content-Encoding` names, and the
//! body decoded. The gateway reads `model` from the body's JSON, so a compressed body is decoded
//! before it is planned, and the upstream gets it decoded (`Content-Encoding` removed,
//! `proxy::upstream`): every upstream takes an identity body, not every one takes gzip.
//!
//! Accepted: `gzip` (and `x-gzip`), `deflate` (zlib, as RFC 9110 defines it; raw deflate too, as
//! some clients send it), `br`, `zstd`, stacked in any order, and `identity` (no coding). Anything
//! else is refused before the body is read (415). The decoded size is bounded by
//! `server.max_request_body` as it is decoded, so a small bomb cannot expand past it (413).
//!
//! Pure: no IO but reading from memory. Imports: `error` and the decoders Pingora already links
//! (flate2, brotli, zstd).

use std::io::Read;

use bytes::Bytes;

use crate::error::GatewayError;

/// One content coding of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding's token, as `Content-Encoding` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    fn from_token(token: &[u8]) -> Option<Coding> {
        const TOKENS: [(&[u8], Coding); 5] = [
            (b"gzip", Coding::Gzip),
            (b"x-gzip", Coding::Gzip),
            (b"deflate", Coding::Deflate),
            (b"br", Coding::Brotli),
            (b"zstd", Coding::Zstd),
        ];
        TOKENS.iter().find(|(t, _)| token.eq_ignore_ascii_case(t)).map(|(_, c)| *c)
    }
}

/// The codings a body was compressed with, in the order they were applied (empty: none).
pub type Codings = Vec<Coding>;

/// Reads the request's `Content-Encoding` lines. No header (the common case) allocates nothing.
pub fn codings<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> Result<Codings, GatewayError> {
    let mut out = Vec::new();
    for value in values {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            }
            match Coding::from_token(token) {
                Some(c) => out.push(c),
                None => {
                    let shown: String = String::from_utf8_lossy(token).chars().take(64).collect();
                    return Err(GatewayError::UnsupportedEncoding(shown));
                }
            }
        }
    }
    Ok(out)
}

/// The body with every coding undone (last applied, first undone), at most `max` bytes.
pub fn decode(codings: &[Coding], body: Bytes, max: usize) -> Result<Bytes, GatewayError> {
    let mut body = body;
    for coding in codings.iter().rev() {
        body = Bytes::from(decode_one(*coding, &body, max)?);
    }
    Ok(body)
}

fn decode_one(coding: Coding, input: &[u8], max: usize) -> Result<Vec<u8>, GatewayError> {
    let bad = || GatewayError::BadEncoding(coding.name());
    let out = match coding {
        Coding::Gzip => bounded(flate2::read::MultiGzDecoder::new(input), max),
        // RFC 9110's deflate is zlib-wrapped; a zlib header is two bytes whose big-endian value is
        // a multiple of 31 with method 8. Anything else is taken as raw deflate.
        Coding::Deflate if is_zlib(input) => bounded(flate2::read::ZlibDecoder::new(input), max),
        Coding::Deflate => bounded(flate2::read::DeflateDecoder::new(input), max),
        Coding::Brotli => bounded(brotli::Decompressor::new(input, 16 * 1024), max),
        Coding::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(d) => bounded(d, max),
            Err(_) => return Err(bad()),
        },
    };
    match out {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(GatewayError::BodyTooLarge(max)),
        Err(_) => Err(bad()),
    }
}

fn is_zlib(input: &[u8]) -> bool {
    input.len() >= 2 && input[0] & 0x0f == 8 && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0
}

/// Reads `reader` to its end; `None` when it holds more than `max` bytes (found after `max + 1`).
fn bounded(reader: impl Read, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    reader.take((max as u64).saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() <= max).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const BODY: &[u8] = br#"{"model":"gpt-5.5","messages":[{"role":"user","content":"hello hello hello"}]}"#;

    fn header(values: &[&str]) -> Result<Codings, GatewayError> {
        let values: Vec<http::HeaderValue> =
            values.iter().map(|v| http::HeaderValue::from_str(v).expect("header value")).collect();
        codings(values.iter())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("encode");
        e.finish().expect("encode")
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("encode");
        e.finish().expect("encode")
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("encode");
        e.finish().expect("encode")
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).expect("encode");
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).expect("encode")
    }

    #[test]
    fn the_header_names_the_codings_in_order() {
        assert_eq!(header(&[]), Ok(vec![]));
        assert_eq!(header(&["identity"]), Ok(vec![]));
        assert_eq!(header(&[""]), Ok(vec![]));
        assert_eq!(header(&["GZIP"]), Ok(vec![Coding::Gzip]));
        assert_eq!(header(&["x-gzip"]), Ok(vec![Coding::Gzip]));
        assert_eq!(header(&["deflate, br"]), Ok(vec![Coding::Deflate, Coding::Brotli]));
        assert_eq!(header(&["zstd", "gzip"]), Ok(vec![Coding::Zstd, Coding::Gzip]));
        assert_eq!(header(&["identity", "compress"]), Err(GatewayError::UnsupportedEncoding("compress".into())));
        assert_eq!(header(&["gzip, snappy"]), Err(GatewayError::UnsupportedEncoding("snappy".into())));
    }

    #[test]
    fn every_coding_decodes_to_the_same_bytes() {
        let cases: [(Coding, Vec<u8>); 5] = [
            (Coding::Gzip, gzip(BODY)),
            (Coding::Deflate, zlib(BODY)),
            (Coding::Deflate, raw_deflate(BODY)),
            (Coding::Brotli, brotli(BODY)),
            (Coding::Zstd, zstd(BODY)),
        ];
        for (coding, compressed) in cases {
            assert_ne!(&compressed[..], BODY);
            assert_eq!(decode(&[coding], Bytes::from(compressed), 1 << 20).as_deref(), Ok(BODY), "{coding:?}");
        }
        // Stacked: `Content-Encoding: zstd, gzip` means zstd first, then gzip; undone in reverse.
        let stacked = gzip(&zstd(BODY));
        assert_eq!(decode(&[Coding::Zstd, Coding::Gzip], Bytes::from(stacked), 1 << 20).as_deref(), Ok(BODY));
        // No coding: the same buffer back.
        let plain = Bytes::from_static(BODY);
        assert_eq!(decode(&[], plain.clone(), 1).map(|b| b.as_ptr()), Ok(plain.as_ptr()));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_named() {
        let big = vec![b' '; 10 << 20];
        let bomb = gzip(&big);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(
            decode(&[Coding::Gzip], Bytes::from(bomb.clone()), 1 << 20),
            Err(GatewayError::BodyTooLarge(1 << 20))
        );
        assert_eq!(decode(&[Coding::Gzip], Bytes::from(bomb), 10 << 20).map(|b| b.len()), Ok(10 << 20));
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let garbage = Bytes::from_static(b"{\"model\":\"gpt-5.5\"} is not compressed");
            assert_eq!(
                decode(&[coding], garbage, 1 << 20),
                Err(GatewayError::BadEncoding(coding.name())),
                "{coding:?}"
            );
        }
        // A truncated stream is not a shorter body.
        let mut cut = gzip(BODY);
        cut.truncate(cut.len() - 10);
        assert_eq!(decode(&[Coding::Gzip], Bytes::from(cut), 1 << 20), Err(GatewayError::BadEncoding("gzip")));
    }
}

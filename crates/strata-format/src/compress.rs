//! Deterministic compression for cpio members and OCI layer blobs.
//!
//! Settings that change the bytes are fixed here: gzip carries no name and mtime 0; xz uses
//! CRC32 (the kernel's xz decoder does not support CRC64); zstd with worker threads gives the
//! same bytes for any worker count ≥ 1 (a guarantee of libzstd), so the thread count is a
//! speed knob only and never enters a cache key.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// A compression algorithm and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Zstd { level: i32 },
    Gzip { level: u32 },
    Xz { level: u32 },
}

/// Error parsing a compression name such as `zstd`, `zstd:19`, `gzip:9`, `xz`, `none`.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression `{given}`: expected none, zstd[:1-19], gzip[:1-9] or xz[:0-9]")]
pub struct ParseError {
    pub given: String,
}

impl Compression {
    /// zstd at the level strata uses by default for initrds.
    pub const DEFAULT: Compression = Compression::Zstd { level: 19 };

    /// The file name extension (without dot), if any.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd { .. } => Some("zst"),
            Compression::Gzip { .. } => Some("gz"),
            Compression::Xz { .. } => Some("xz"),
        }
    }

    /// Compress `data` into a new buffer.
    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 3);
        let mut w = self.writer(&mut out)?;
        w.write_all(data)?;
        w.finish()?;
        Ok(out)
    }

    /// A writer that compresses into `out`; call [`Encoder::finish`] at the end.
    pub fn writer<W: Write>(self, out: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::None(out),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                enc.multithread(threads.max(1))?;
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
            Compression::Gzip { level } => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::new(level)),
            ),
            Compression::Xz { level } => {
                let stream = xz2::stream::Stream::new_easy_encoder(level, xz2::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
                Encoder::Xz(xz2::write::XzEncoder::new_stream(out, stream))
            }
        })
    }
}

/// A compressing writer from [`Compression::writer`].
pub enum Encoder<W: Write> {
    None(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(xz2::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Write the end of the stream and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Xz { level } => write!(f, "xz:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError { given: s.to_string() };
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<i64>().map_err(|_| err())?)),
            None => (s, None),
        };
        let in_range = |lo: i64, hi: i64, default: i64| -> Result<i64, ParseError> {
            let l = level.unwrap_or(default);
            if (lo..=hi).contains(&l) { Ok(l) } else { Err(err()) }
        };
        Ok(match name {
            "none" if level.is_none() => Compression::None,
            "zstd" => Compression::Zstd {
                level: in_range(1, 19, 19)? as i32,
            },
            "gzip" | "gz" => Compression::Gzip {
                level: in_range(1, 9, 9)? as u32,
            },
            "xz" => Compression::Xz {
                level: in_range(0, 9, 6)? as u32,
            },
            _ => return Err(err()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["none", "zstd:19", "zstd:3", "gzip:9", "xz:6"] {
            assert_eq!(s.parse::<Compression>().unwrap().to_string(), s);
        }
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::DEFAULT);
        for bad in ["zstd:0", "zstd:20", "lz4", "gzip:x", "none:1"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_algorithm_round_trips_and_is_deterministic() {
        let d = data();
        for c in [
            Compression::None,
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
            Compression::Xz { level: 1 },
        ] {
            let a = c.compress(&d).unwrap();
            assert_eq!(a, c.compress(&d).unwrap(), "{c} not deterministic");
            let mut back = Vec::new();
            match c {
                Compression::None => back = a.clone(),
                Compression::Zstd { .. } => back = zstd::decode_all(a.as_slice()).unwrap(),
                Compression::Gzip { .. } => {
                    flate2::read::GzDecoder::new(a.as_slice())
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Xz { .. } => {
                    xz2::read::XzDecoder::new(a.as_slice()).read_to_end(&mut back).unwrap();
                }
            }
            assert_eq!(back, d, "{c}");
        }
    }

    #[test]
    fn xz_uses_crc32_for_the_kernel() {
        let a = Compression::Xz { level: 1 }.compress(b"x").unwrap();
        // Stream flags (bytes 6..8): 0x00, check type 0x01 = CRC32.
        assert_eq!(&a[6..8], &[0x00, 0x01]);
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_worker_count() {
        let d = data();
        let with = |threads: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.multithread(threads).unwrap();
            enc.include_checksum(true).unwrap();
            enc.write_all(&d).unwrap();
            enc.finish().unwrap()
        };
        assert_eq!(with(1), with(4));
    }
}

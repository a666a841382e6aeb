//! The frame codec: one chunk ⇄ one independent zstd frame. Owns compressing a chunk
//! ([`compress_chunk`], used by capture and the agent's relay tests), reading one frame
//! from an image's source ([`read_frame`]) or a region's frames as one paced stream that
//! reconnects at the frame it was reading ([`FrameStream`]), and decoding a frame into
//! the raw bytes whose sha256 the manifest records ([`decode_frame`], [`read_chunk`]).
//! What an image's chunks must look like is [`crate::manifest`]'s; checking a whole image
//! is [`crate::verify`]'s.

use crate::disk::AlignedBuf;
use crate::error::{Error, Result};
use crate::manifest::{Image, Region};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::{Duration, Instant};

/// Compresses one chunk into an independent zstd frame whose window covers the whole
/// chunk: measured on the test fixture's root fs, 8 MiB frames so made are 15 % smaller
/// than one `zstd -3` stream of the same bytes (whose window is 2 MiB), at the same speed.
///
/// The frame carries zstd's content checksum (XXH64 of the raw bytes as the compressor
/// read them, 4 bytes; every decode checks it, at a few GB/s). An upload's raw sha256s
/// are taken by the server from the decompressed frame, not by the node
/// ([`crate::capture::CaptureOptions::hash_raw`]): the checksum is what still proves
/// that the frame holds the bytes the node read, should its compressor or memory have
/// failed between reading and sending. Frames without it (older images) decode as well.
pub fn compress_chunk(raw: &[u8], level: i32, chunk_size: u64) -> std::io::Result<Vec<u8>> {
    let wlog = 64 - (chunk_size.max(1 << 10) - 1).leading_zeros();
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::stream::raw::CParameter::WindowLog(wlog))?;
    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
    c.compress(raw)
}

/// `frame` (as [`compress_chunk`] makes it: one frame with zstd's content checksum) as
/// it was made before frames carried the checksum: the descriptor's checksum bit cleared
/// and the 4 checksum bytes dropped — byte for byte the frame the same compressor made
/// without it. `None` for anything else. A relay re-making an evicted frame of an
/// image captured by an earlier imgtool matches its `frame_sha256` this way.
pub fn without_checksum(frame: &[u8]) -> Option<Vec<u8>> {
    if !has_checksum_flag(frame) {
        return None;
    }
    let mut out = frame[..frame.len() - 4].to_vec();
    out[4] &= !CHECKSUM_FLAG;
    Some(out)
}

/// A zstd frame's magic number, little-endian on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The content-checksum bit of a zstd frame header's descriptor (its fifth byte).
const CHECKSUM_FLAG: u8 = 0x04;

/// Whether `frame` starts as a zstd frame whose descriptor says it ends in a content
/// checksum, and is long enough to (magic, descriptor, one block header, checksum).
fn has_checksum_flag(frame: &[u8]) -> bool {
    frame.len() >= 9 && frame[..4] == ZSTD_MAGIC && frame[4] & CHECKSUM_FLAG != 0
}

/// Whether `frame` is exactly one zstd frame (nothing before or after it) that carries a
/// content checksum: what the upload server asks of a frame whose raw sha256 it computes
/// itself (the checksum is then what ties the frame to the bytes the node read).
pub fn is_one_checksummed_frame(frame: &[u8]) -> bool {
    has_checksum_flag(frame)
        && zstd::zstd_safe::find_frame_compressed_size(frame).ok() == Some(frame.len())
}

/// Reads chunk `i`'s frame from the image's source.
pub fn read_frame(image: &Image, r: &Region, i: usize) -> Result<Vec<u8>> {
    let c = &r.chunks[i];
    image
        .source
        .read_range(&r.payload, c.payload_offset, c.compressed_length)
        .map_err(|e| {
            if e.unreachable {
                Error::Source(e)
            } else {
                r.chunk_error(i, format!("reading the frame: {e}"))
            }
        })
}

/// Reads a region's frames in order over one streamed range (the rest of the region)
/// instead of a request per chunk: the upstream sends frame after frame without waiting
/// for a request, which in a chain of relays keeps every link busy. A broken stream is
/// reported to the source (which may move up its chain) and reopened at the frame it
/// was reading. With [`FrameStream::only`] (a delta restore) a stream covers one run of
/// wanted frames and ends there: frames not wanted are never asked for, so they cost
/// nothing on the wire; the next wanted frame opens the next run.
pub struct FrameStream<'a> {
    image: &'a Image,
    r: &'a Region,
    next: usize,
    open: Option<crate::source::Stream>,
    /// Each frame must arrive within `grace` + its length at `min_rate` bytes/s.
    min_rate: u64,
    grace: Duration,
    /// Which frames are wanted (`None`: all); a stream ends at the end of a run.
    want: Option<Vec<bool>>,
}

/// Broken streams tolerated while reading one frame.
const STREAM_RETRIES: u32 = 8;

pub use crate::limits::{FRAME_GRACE, MIN_FRAME_RATE};

impl<'a> FrameStream<'a> {
    pub fn new(image: &'a Image, r: &'a Region) -> Self {
        FrameStream {
            image,
            r,
            next: 0,
            open: None,
            min_rate: MIN_FRAME_RATE,
            grace: FRAME_GRACE,
            want: None,
        }
    }

    /// Only the frames whose entry in `want` is true are read (one per chunk of the
    /// region; missing entries count as wanted): each stream covers one run of wanted
    /// frames.
    pub fn only(mut self, want: Vec<bool>) -> Self {
        self.want = Some(want);
        self
    }

    /// Where the stream opened at chunk `i` ends in the payload: after the last frame of
    /// the run of wanted frames that starts at `i` (at least frame `i` itself), or at the
    /// end of the region when every frame is wanted.
    fn run_end(&self, i: usize) -> u64 {
        let chunks = &self.r.chunks;
        let last = match &self.want {
            None => chunks.len().saturating_sub(1),
            Some(w) => (i + 1..chunks.len())
                .take_while(|&k| w.get(k).copied().unwrap_or(true))
                .last()
                .unwrap_or(i),
        };
        chunks
            .get(last)
            .map_or(0, |c| c.payload_offset.saturating_add(c.compressed_length))
    }

    /// Another pace than [`MIN_FRAME_RATE`] and [`FRAME_GRACE`] (tests).
    pub fn with_pace(mut self, min_rate: u64, grace: Duration) -> Self {
        self.min_rate = min_rate.max(1);
        self.grace = grace;
        self
    }

    /// Frame `i` (cheapest when called for 0, 1, 2, … in order).
    pub fn frame(&mut self, i: usize) -> Result<Vec<u8>> {
        let (r, c) = (self.r, &self.r.chunks[i]);
        let len = c.compressed_length;
        // Checked when the image was loaded; again here because this allocates it.
        if len > crate::chunk::MAX_FRAME {
            return Err(r.chunk_error(
                i,
                format!(
                    "compressed_length {len} is more than the largest frame ({} bytes)",
                    crate::chunk::MAX_FRAME
                ),
            ));
        }
        let mut failures = 0;
        loop {
            if self.next != i {
                self.open = None;
            }
            let stream = match &mut self.open {
                Some(s) => s,
                None => {
                    let end = self.run_end(i);
                    let s = self
                        .image
                        .source
                        .open_range(
                            &r.payload,
                            c.payload_offset,
                            end.saturating_sub(c.payload_offset).max(len),
                        )
                        .map_err(|e| {
                            if e.unreachable {
                                Error::Source(e)
                            } else {
                                r.chunk_error(i, format!("reading the frame: {e}"))
                            }
                        })?;
                    self.next = i;
                    self.open.insert(s)
                }
            };
            let mut buf = Vec::with_capacity(len as usize);
            let mut paced = Deadline {
                inner: &mut stream.reader,
                until: Instant::now()
                    + self.grace
                    + Duration::from_millis(len.saturating_mul(1000) / self.min_rate),
                min_rate: self.min_rate,
            };
            let why = match (&mut paced).take(len).read_to_end(&mut buf) {
                Ok(_) if buf.len() as u64 == len => {
                    self.next = i + 1;
                    return Ok(buf);
                }
                Ok(_) => format!("the stream ended after {} of {len} bytes", buf.len()),
                Err(e) => format!("connection lost after {} of {len} bytes: {e}", buf.len()),
            };
            let from = stream.from.clone();
            self.open = None;
            self.image.source.stream_failed(&from, &why);
            failures += 1;
            if failures >= STREAM_RETRIES {
                return Err(r.chunk_error(
                    i,
                    format!("reading the frame from {from}: {why} ({failures} attempts)"),
                ));
            }
        }
    }
}

/// A reader that fails once its deadline has passed (checked before each read; a read
/// itself is bounded by the socket's stall timeout).
struct Deadline<'r> {
    inner: &'r mut Box<dyn Read + Send>,
    until: Instant,
    min_rate: u64,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.until {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the frame arrives slower than {} KiB/s",
                    self.min_rate / 1024
                ),
            ));
        }
        self.inner.read(buf)
    }
}

/// Decompresses a frame into an `O_DIRECT`-aligned buffer and checks the raw sha256.
pub fn decode_frame(frame: &[u8], r: &Region, i: usize) -> Result<AlignedBuf> {
    let c = &r.chunks[i];
    // Checked when the image was loaded; again here because this allocates it.
    if c.length > crate::chunk::MAX_CHUNK {
        return Err(r.chunk_error(
            i,
            format!(
                "length {} is more than the largest chunk ({} bytes)",
                c.length,
                crate::chunk::MAX_CHUNK
            ),
        ));
    }
    let mut raw = AlignedBuf::new(c.length as usize);
    let n = zstd::bulk::decompress_to_buffer(frame, &mut raw[..])
        .map_err(|e| r.chunk_error(i, format!("zstd: {e}")))?;
    if n as u64 != c.length {
        return Err(r.chunk_error(
            i,
            format!("decompressed to {n} bytes, expected {}", c.length),
        ));
    }
    let sum = hex::encode(Sha256::digest(&raw[..]));
    if sum != c.sha256 {
        return Err(r.chunk_error(
            i,
            format!("sha256 {sum} does not match the manifest's {}", c.sha256),
        ));
    }
    Ok(raw)
}

/// Reads, decompresses and verifies chunk `i`.
pub fn read_chunk(image: &Image, r: &Region, i: usize) -> Result<AlignedBuf> {
    decode_frame(&read_frame(image, r, i)?, r, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_without_its_checksum_is_the_frame_made_without_one() {
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let with = compress_chunk(&raw, 3, 1 << 18).unwrap();
        assert!(is_one_checksummed_frame(&with));
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::stream::raw::CParameter::WindowLog(18))
            .unwrap();
        c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(false))
            .unwrap();
        let without = c.compress(&raw).unwrap();
        assert_eq!(without_checksum(&with), Some(without.clone()));
        // Made without a checksum, or not exactly one frame: not what the upload server
        // takes without a declared raw sha256.
        assert!(!is_one_checksummed_frame(&without));
        assert_eq!(without_checksum(&without), None);
        let mut two = with.clone();
        two.extend_from_slice(&with);
        assert!(!is_one_checksummed_frame(&two));
        let mut trailing = with.clone();
        trailing.push(0);
        assert!(!is_one_checksummed_frame(&trailing));
        assert!(!is_one_checksummed_frame(&with[..with.len() - 1]));
        assert!(!is_one_checksummed_frame(&[0x28, 0xb5, 0x2f, 0xfd, 0x04]));
    }
}

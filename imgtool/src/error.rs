//! The library's error type: every variant names what a user needs to find the problem
//! (device, partition, chunk, byte offset, file) in its fields, and keeps the error that
//! caused it (an `io::Error`, a source or trust error) as its `#[source]`. It also defines
//! [`SourceError`] and [`TrustError`] (re-exported by `source` and `sign`), so that this
//! module is a leaf every other module may use without an import circle.
//!
//! A variant's message is the context only; the cause follows when the error is printed
//! as a chain, the way the binaries print (`anyhow`'s `{:#}`: `writing partition 2 chunk
//! 7 at … (disk byte …): No space left on device (os error 28)`), so the cause appears
//! exactly once. Code that formats an [`Error`] into another message should chain it
//! (`anyhow::Error::context`, or [`Error::chain`]) rather than use its `Display` alone.

use std::io;
use std::path::PathBuf;

/// A failed read, with what was being read.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {msg}")]
pub struct SourceError {
    pub location: String,
    pub msg: String,
    /// The source cannot be reached at all (as opposed to a bad answer).
    pub unreachable: bool,
}

/// Why an image is not trusted, or a key or signature file could not be used. Every
/// message names the image (location and id) or the file, and the keys tried.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("image {location} (id {image_id}) is unsigned: {why}; refused because this node trusts {keys}")]
    Unsigned {
        location: String,
        image_id: String,
        why: String,
        keys: String,
    },
    #[error(
        "image {location} (id {image_id}) is not signed by a trusted key: {found}; trusted: {keys}"
    )]
    Untrusted {
        location: String,
        image_id: String,
        /// What the signature file held (`signed by unknown key X`, `bad signature by key Y`, …).
        found: String,
        keys: String,
    },
    #[error("image {location} is pinned to id {expected} (netboot.image_id), but the server offers id {found}: refused")]
    Pinned {
        location: String,
        expected: String,
        found: String,
    },
    #[error("{path}:{line}: {msg}")]
    Malformed {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

/// Errors of the imgtool library. Binaries wrap them with `anyhow` context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or device operation on a path (`opening`, `writing`, `renaming into place`).
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    /// A step of a restore or capture on a whole device (`wiping the old table`,
    /// `zeroing partition 3 at 4096`, `flushing`).
    #[error("{device}: {what}")]
    Device {
        device: PathBuf,
        what: String,
        #[source]
        err: io::Error,
    },
    /// Writing one chunk of a partition, or reading it back.
    #[error("{device}: {action} partition {partition} chunk {chunk} at {at}")]
    ChunkIo {
        device: PathBuf,
        /// `writing` or `reading back`.
        action: &'static str,
        partition: u32,
        chunk: usize,
        /// Where: `partition byte N (disk byte M)` or `disk byte M`.
        at: String,
        #[source]
        err: io::Error,
    },
    /// Reading a range of a region from the disk being captured.
    #[error("{device}: reading {region} at byte {offset} (disk offset {disk_offset})")]
    CaptureRead {
        device: PathBuf,
        region: String,
        offset: u64,
        disk_offset: u64,
        #[source]
        err: io::Error,
    },
    /// Probing a partition's file system.
    #[error("{device} partition {partition}: probing the file system")]
    Probe {
        device: PathBuf,
        partition: u32,
        #[source]
        err: io::Error,
    },
    /// Compressing one chunk.
    #[error("zstd compressing {region} chunk {chunk}")]
    Compress {
        region: String,
        chunk: usize,
        #[source]
        err: io::Error,
    },
    #[error("{path}: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("image {path}: format version {found} is not supported (this imgtool reads version {supported}); use a matching imgtool release")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("partition {partition}, chunk {chunk} (byte offset {offset} in the partition, payload {payload} at {payload_offset}): {msg}")]
    BadChunk {
        partition: String,
        chunk: usize,
        offset: u64,
        payload: String,
        payload_offset: u64,
        msg: String,
    },
    #[error("refusing to write {device}: {reason}")]
    Refused { device: PathBuf, reason: String },
    /// A partition table on a disk that no reader accepts (a damaged or hostile GPT header
    /// or entry, a looping EBR chain, …). The message names the structure and sector.
    #[error("{0}")]
    DamagedTable(String),
    /// Reading or writing a table structure (`reading sector 0`, `writing GPT header at
    /// sector 1`, `MBR: writing EBR at sector 2048`).
    #[error("{what}")]
    TableIo {
        what: String,
        #[source]
        err: io::Error,
    },
    /// A layout the table writer cannot encode on this disk (`GPT for N sectors`, `MBR`).
    #[error("{table}: {msg}")]
    Unencodable { table: String, msg: String },
    /// What the caller asked for does not fit what is there (a partition not on the disk
    /// or not in the image, `--raw` of a partition not captured, …).
    #[error("{0}")]
    Selection(String),
    /// A disk whose table cannot be captured (none, or one that breaks the layout rules).
    #[error("{device}: {reason}")]
    Uncapturable { device: PathBuf, reason: String },
    /// Capture writes a new image directory; this one is there.
    #[error("{} already exists: capture writes a new image directory; remove it or pick another name", path.display())]
    Exists { path: PathBuf },
    /// A path that is neither a block device nor a regular file.
    #[error("{}: neither a block device nor a regular file", path.display())]
    NotADisk { path: PathBuf },
    /// An image URL refused before any request.
    #[error("{reason}")]
    BadUrl { url: String, reason: String },
    /// A lock held by a thread that panicked (a bug, not an input problem).
    #[error("{0} poisoned")]
    Poisoned(&'static str),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// An upload to `imgtool serve` failed (refused, cut, a bad answer).
    #[error(transparent)]
    Upload(#[from] crate::upload::UploadError),
    #[error("{program} failed on {target}: {msg}")]
    External {
        program: String,
        target: String,
        msg: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            err: source,
        }
    }

    /// A device step that failed (see [`Error::Device`]).
    pub fn device(device: impl Into<PathBuf>, what: impl Into<String>, err: io::Error) -> Self {
        Error::Device {
            device: device.into(),
            what: what.into(),
            err,
        }
    }

    /// The message with every cause after it (`context: cause: cause`), for code that
    /// puts an error into a string (a status report, a `Result<_, String>`).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Any error's message with every cause after it (`context: cause: cause`), as
/// [`Error::chain`] for the other error types of the library (`ServeError`, …).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_as_source_and_printed_once_in_a_chain() {
        let e = Error::ChunkIo {
            device: "/dev/x".into(),
            action: "writing",
            partition: 2,
            chunk: 7,
            at: "partition byte 4096 (disk byte 1052672)".into(),
            err: io::Error::from_raw_os_error(28),
        };
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        assert!(src.is_some_and(|s| s.contains("os error 28")));
        let chain = e.chain();
        assert_eq!(chain.matches("os error 28").count(), 1, "{chain}");
        assert!(
            chain.starts_with(
                "/dev/x: writing partition 2 chunk 7 at partition byte 4096 (disk byte 1052672): "
            ),
            "{chain}"
        );
    }
}

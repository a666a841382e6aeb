//! The library's error type: every variant names what a user needs to find the problem
//! (device, partition, chunk, byte offset, file).

use std::path::PathBuf;

/// Errors of the imgtool library. Binaries wrap them with `anyhow` context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message and deliberately not a `#[source]`: printed
    /// as a chain (`{:#}`) it would otherwise appear twice (`… (os error 28): … (os error 28)`).
    #[error("{what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
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
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("{program} failed on {target}: {msg}")]
    External {
        program: String,
        target: String,
        msg: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            err: source,
        }
    }
}

//! Network backup: a disk captured on one machine and uploaded, while it is being
//! captured, into a group of `imgtool serve`'s image root, where it is checked as it
//! arrives and published as a new version (docs/PROTOCOL.md, "Upload";
//! docs/FORMAT.md, "Versions").
//!
//! - [`wire`]: the protocol's routes, headers and tokens as pure parsers (fuzzed).
//! - [`client`]: [`capture_to_server`] and its [`client::UploadSink`], the
//!   [`crate::capture::ImageSink`] that sends frames (what `imgtool capture DISK URL`
//!   and the node agent's backup mode call).
//! - [`server`]: [`Uploads`], the `/upload/` routes of `imgtool serve`.
//! - [`session`]: one upload being received, its frame checks and the commit check.
//! - [`verify`]: the [`verify::Verifier`] that decompresses and raw-checks frames off
//!   the request path (bounded), and each session's [`verify::Verification`].
//! - [`tokens`]: the tokens file and the record of spent tokens.
//!
//! Publishing, listing and rollback of versions are [`crate::versions`]'s.

pub mod client;
pub mod server;
pub mod session;
pub mod tokens;
pub mod verify;
pub mod wire;

pub use client::{capture_to_server, UploadError, UploadReport, UploadTarget};
pub use server::{UploadOptions, Uploads};

//! imgtool: logical-group disk images.
//!
//! Brief overview of the types and how they connect:
//! - [`disk::BlockIo`] is positional block I/O; [`disk::Disk`] implements it over a file
//!   or a block device and owns the kernel edges (sizes, `BLKPG`, mount checks), through
//!   `rustix` and the few block ioctls of [`sys`].
//! - [`table::Layout`] is a partition table as captured (plain data, also reachable as
//!   `layout::Layout`); the codecs below it read and write it (GPT via [`gpt`], MBR with
//!   logical partitions via [`mbr`], little-endian fields via [`bytes`]); above them,
//!   [`layout`] validates it, reads a disk's table and [`layout::plan_layout`] applies the
//!   layout rules. Imports go one way: `layout` → `gpt`/`mbr` → `table`.
//! - [`fs::probe`] says which byte ranges of a partition are in use.
//! - [`frame`] is the chunk codec: a chunk ⇄ an independent zstd frame, read one by one
//!   or as a paced, reconnecting [`frame::FrameStream`].
//! - [`manifest::Manifest`] lists the chunks of each region; [`manifest::Image`] is a
//!   loaded, checked image directory.
//! - [`source::ImageSource`] is where an image's files come from: a directory or HTTP
//!   upstreams with failover (one ureq agent per source); partition payloads are
//!   streamed, each answer's range checked and its body bounded to what was asked.
//! - [`sign`] holds ed25519 keys and an image's `signature` file; [`sign::verify_image`]
//!   is the check `verify`/`restore --trust` and the node agent make before writing.
//! - [`httpd::Server`] is the bounded HTTP server under [`serve`] and the agent's relay.
//! - [`capture::capture`], [`restore::restore`], [`verify::verify`], [`diff::diff`] are the
//!   operations; the `imgtool` binary only parses arguments and calls them, and prints
//!   what [`render`] makes of their reports. Restore runs as named phases (plan → head →
//!   stream → grow → finalize, see [`restore`]); growing file systems is [`grow`]'s
//!   (e2fsprogs for ext; XFS mounted through [`mount`], a loop device over the
//!   partition's bytes, and grown by ioctl; an LVM PV's metadata edited as pvresize
//!   does); the foreign signature areas restore clears are [`wipe`]'s.
//! - [`error::Error`] is the library's error: context in fields, the cause as `source`.

pub mod board;
pub mod bytes;
pub mod capture;
pub mod chunk;
pub mod diff;
pub mod disk;
pub mod error;
pub mod frame;
pub mod fs;
pub mod fuzzing;
pub mod gpt;
pub mod grow;
pub mod httpd;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod mark;
pub mod mbr;
pub mod mount;
pub mod pool;
pub mod progress;
pub mod render;
pub mod restore;
pub mod serve;
pub mod sign;
pub mod source;
pub mod sys;
pub mod table;
pub mod upload;
pub mod verify;
pub mod versions;
pub mod wipe;

pub use error::{Error, Result};

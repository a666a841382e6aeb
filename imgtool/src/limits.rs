//! Limits on what a reader takes from an image source, shared by the modules that read
//! (manifest, frame, source). A leaf: it imports nothing from the crate, so `source`
//! can bound its reads without depending on the modules built on top of it.

use std::time::Duration;

/// Largest `manifest` or `layout` file a reader accepts (64 MiB), checked while reading.
/// A manifest line per chunk is about 400 bytes, so this holds ~160 000 chunks: 1.3 TB of
/// used data at the default 8 MiB chunk size. It bounds what a node (PID 1 in a ramdisk)
/// allocates for an image's description before it can check anything.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The slowest a frame may arrive, after [`FRAME_GRACE`]: an upstream that sends a byte
/// now and then (a broken link, a compromised relay) would otherwise hold a node forever,
/// since every single read is within the socket's stall timeout. Far below any real
/// link: 64 nodes behind one saturated 1 Gbit/s uplink still get ~2 MB/s each.
pub const MIN_FRAME_RATE: u64 = 64 << 10;

/// Time a frame may take on top of [`MIN_FRAME_RATE`]: a relay waits up to 30 s for a
/// chunk from its own upstream before it gives up, so a chain's frames can be that late.
pub const FRAME_GRACE: Duration = Duration::from_secs(40);

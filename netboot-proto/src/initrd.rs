//! The layout of the boot initrd that `pxe-builder initrd` writes and the agent reads.

/// Where the initrd holds the public keys the node trusts to sign images
/// (`pxe-builder initrd --trust`, one `<key id>.pub` each; docs/TRUST.md).
pub const TRUSTED_DIR: &str = "/etc/netboot/trusted";

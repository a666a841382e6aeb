//! pxe-builder: turns one `cluster.toml` into the whole PXE/TFTP boot tree.
//!
//! Not built yet: its issue (cluster model, hex-IP cover, per-node files, vSMP entries,
//! GRUB/iPXE, DHCP snippets, clone plan) has not landed. This crate exists so the
//! workspace has its fixed top level; it deliberately exports nothing rather than
//! pretending to work.

//! pxe-builder: turns one `cluster.toml` into the whole PXE/TFTP boot tree.
//!
//! Brief overview:
//! - [`model`] parses and validates the description into a [`model::Cluster`], reporting
//!   every problem with file:line:column (read by [`plain_toml`] when the file is plain,
//!   else by the `toml` crate); [`validate`] holds the character sets, reserved
//!   names and URL rules it applies;
//! - [`escape`] quotes or refuses each value for each output syntax (second wall);
//! - [`hex`] computes the hex-IP file names pxelinux and GRUB look up (exact minimal cover);
//! - [`boot`] renders each node's and each subnet's entry (pxelinux, GRUB, iPXE, bootopts);
//! - [`bootfiles`] hashes the boot files into `etc/bootfiles.json` (what a rack's
//!   secondary checks before serving them);
//! - [`backup`] marks one node of a built tree for a network backup (its entries and its
//!   upload token);
//! - [`dhcp`] renders dnsmasq and ISC dhcpd snippets; [`plan`] the clone plan;
//! - [`tree`] assembles every file and writes the tree atomically; [`lookup`] explains
//!   which file a client will load; [`render`] is what the command prints;
//! - [`work`] counts the steps of check and build (the linear-growth test);
//! - [`fuzzing`] the fuzz target body for cluster.toml (docs/FUZZING.md).

pub mod backup;
pub mod boot;
pub mod bootfiles;
pub mod cpio;
pub mod dhcp;
pub mod escape;
pub mod fuzzing;
pub mod hex;
pub mod initrd;
pub mod lookup;
pub mod model;
pub mod plain_toml;
pub mod plan;
pub mod render;
pub mod tree;
pub mod validate;
pub mod work;

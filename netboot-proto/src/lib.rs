//! netboot-proto: everything the netboot programs exchange, in one typed place.
//!
//! `pxe-builder` writes these formats, the node agent (`initrd-agent`) and `imgtool serve`
//! read them; each side uses the same types, so a field cannot be written under one name
//! and read under another. Only `serde`, `serde_json` and `thiserror`: the crate is linked
//! into the static agent.
//!
//! Brief overview:
//! - [`plan`]: the clone plan (`clone-plan.json`): [`plan::Plan`], its upstream walk
//!   ([`plan::Plan::chain`]) and a node's route in it ([`plan::Plan::route`]), bounded for
//!   a plan that came over the network;
//! - [`bootopts`]: the subnet's `etc/bootopts/<HEX>` file, its keys, reader and writer;
//! - [`status`]: the status report an agent posts ([`status::Report`] with its
//!   [`status::Phase`]) and a board entry ([`status::NodeStatus`]), with the bounds a
//!   board applies;
//! - [`hex`]: hex-IP file names (`AC140005`, and the prefixes a client tries);
//! - [`net`]: MAC addresses and CIDR subnets;
//! - [`range`]: the HTTP `Range: bytes=` header;
//! - [`names`]: the naming rules both sides check (node, entity, group, image names;
//!   image ids);
//! - [`bootfiles`]: the boot files' manifest (`etc/bootfiles.json`) a rack's secondary
//!   fetches the kernel and initrd by, bounded;
//! - [`initrd`]: where in the boot initrd the agent finds what `pxe-builder initrd` put;
//! - [`seen`]: "have you seen U?" — which addresses fetched from a relay or the primary
//!   (bounded), and the typed answer a waiting node parses.
//!
//! The formats are described for people in `docs/PROTOCOL.md`.

pub mod bootfiles;
pub mod bootopts;
pub mod hex;
pub mod initrd;
pub mod names;
pub mod net;
pub mod plan;
pub mod range;
pub mod seen;
pub mod status;

//! The partition table's types: [`Layout`] (a disk's table as captured: the image's
//! `layout` file), [`Partition`], [`TableKind`], [`MbrRole`], and the limits every layout
//! must keep. Plain data with no I/O: the codecs ([`crate::gpt`], [`crate::mbr`]) read and
//! write it, and [`crate::layout`] validates, compares and plans it. Nothing here imports
//! either, so the codecs sit below the layout rules and no module imports its importer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "GPT",
            TableKind::Mbr => "MBR",
        })
    }
}

/// MBR partition role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MbrRole {
    Primary,
    Extended,
    Logical,
}

/// One partition. Sectors are logical sectors of the layout's `sector_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// GPT: the type GUID (upper case); MBR: the type byte as `0x83`.
    #[serde(rename = "type")]
    pub type_: String,
    /// GPT: the partition's unique GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// GPT: the partition name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GPT: the attribute bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attributes: u64,
    /// MBR: primary, extended or logical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<MbrRole>,
    /// MBR: the active (boot) flag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootable: bool,
    /// MBR logical partitions: the sector of the EBR that describes this partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebr: Option<u64>,
    /// The file system found at capture (`ext4`, `vfat`, `swap`, `unknown`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Partition {
    /// An MBR partition as tests build them: no GPT fields, not bootable, no fs.
    #[cfg(test)]
    pub(crate) fn mbr(
        number: u32,
        start: u64,
        size: u64,
        type_: &str,
        role: MbrRole,
        ebr: Option<u64>,
    ) -> Partition {
        Partition {
            role: Some(role),
            ebr,
            ..Partition::plain(number, start, size, type_)
        }
    }

    /// A partition as tests build them with only a place and a type: no GPT ids, no MBR
    /// role, no fs.
    #[cfg(test)]
    pub(crate) fn plain(number: u32, start: u64, size: u64, type_: &str) -> Partition {
        Partition {
            number,
            start,
            size,
            type_: type_.into(),
            guid: None,
            name: None,
            attributes: 0,
            role: None,
            bootable: false,
            ebr: None,
            filesystem: None,
        }
    }

    /// The first sector after the partition (saturating: a layout read from a hostile disk
    /// may hold any numbers; [`Layout::validate`] refuses those that do not fit).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
    pub fn is_extended(&self) -> bool {
        self.role == Some(MbrRole::Extended)
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub table: TableKind,
    pub sector_size: u32,
    /// Size of the whole disk in bytes.
    pub disk_size: u64,
    /// GPT: the disk GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<String>,
    /// GPT: first usable LBA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_usable: Option<u64>,
    /// GPT: number of partition entries in the table (usually 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u32>,
    /// MBR: the 32-bit disk signature, as `0x1234abcd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_signature: Option<String>,
    /// Number of the partition that takes the rest of a larger disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow: Option<u32>,
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// A GPT layout as tests build them: 512-byte sectors, 128 entries from LBA 34, no
    /// disk GUID, no grow partition.
    #[cfg(test)]
    pub(crate) fn gpt(disk_size: u64, partitions: Vec<Partition>) -> Layout {
        Layout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size,
            disk_guid: None,
            first_usable: Some(34),
            entries: Some(128),
            disk_signature: None,
            grow: None,
            partitions,
        }
    }

    pub fn partition(&self, n: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == n)
    }

    /// Sectors on the disk (0 for a sector size of 0, which [`Layout::validate`] refuses).
    pub fn disk_sectors(&self) -> u64 {
        self.disk_size
            .checked_div(self.sector_size as u64)
            .unwrap_or(0)
    }

    /// Partitions holding data (MBR extended containers excluded).
    pub fn data_partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.iter().filter(|p| !p.is_extended())
    }

    /// The default grow partition: the data partition that ends last.
    pub fn default_grow(&self) -> Option<u32> {
        self.data_partitions()
            .max_by_key(|p| p.end())
            .map(|p| p.number)
    }

    /// The lowest sector any partition (or EBR) occupies: where the disk head ends.
    pub fn first_used_sector(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.start.min(p.ebr.unwrap_or(u64::MAX)))
            .min()
            .unwrap_or(self.disk_sectors())
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Logical sector sizes a layout may declare: the two that disks have. Every offset in the
/// image is in these units, so anything else is a damaged or hostile file.
pub const SECTOR_SIZES: [u32; 2] = [512, 4096];

/// Most GPT partition entries a layout may declare: the bound the GPT reader applies
/// (4096 entries of 128 bytes = 512 KiB), far above the 128 every partitioning tool writes.
/// It bounds the entry array restore builds and the partition numbers it accepts.
pub const MAX_GPT_ENTRIES: u32 = 4096;

/// Largest disk head an image holds: what capture stores at most (the boot code, the table
/// and the boot-loader gap before the first partition, 1 MiB). Restore holds the head in
/// memory until the end, and writes it over the start of the disk.
pub const MAX_HEAD: u64 = 1 << 20;

/// The largest `disk_size` a layout may declare: 2^63 bytes (8 EiB). Far beyond any disk;
/// it keeps every sector count times the sector size inside `u64`.
pub const MAX_DISK_BYTES: u64 = 1 << 63;

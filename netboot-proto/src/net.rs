//! MAC addresses and IPv4 subnets as the programs write and read them: `cluster.toml`,
//! bootopts `node=` lines and `subnet=`, the kernel command line (`BOOTIF=`,
//! `netboot.mac=`), pxelinux's `01-<mac>` file names.

use std::net::Ipv4Addr;

/// A MAC address that is not six hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MAC `{0}` is not six hex bytes like 52:54:00:12:34:56")]
pub struct BadMac(pub String);

/// Why a subnet is not a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCidr {
    #[error("subnet `{0}` is not CIDR (like 172.20.0.0/24)")]
    NotCidr(String),
    #[error("subnet `{subnet}`: `{addr}` is not an IPv4 address")]
    Address { subnet: String, addr: String },
    #[error("subnet `{subnet}`: prefix `{prefix}` is not 0-32")]
    Prefix { subnet: String, prefix: String },
    #[error("subnet `{subnet}` has host bits set; did you mean {base}/{prefix}?")]
    HostBits {
        subnet: String,
        base: Ipv4Addr,
        prefix: u8,
    },
}

/// Longest MAC text parsed (`aa:bb:cc:dd:ee:ff` is 17 bytes); a longer one is refused
/// without being split.
pub const MAX_MAC_TEXT: usize = 17;

/// Parses `aa:bb:cc:dd:ee:ff` (or with dashes), any case.
pub fn parse_mac(s: &str) -> Result<[u8; 6], BadMac> {
    let bad = || BadMac(s.to_string());
    if s.len() > MAX_MAC_TEXT {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut m {
        let p = parts.next().ok_or_else(bad)?;
        // Two hex digits (`from_str_radix` alone would also take `+c`).
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(m)
}

/// `aa:bb:cc:dd:ee:ff`, lower case: how every file and report writes a MAC.
pub fn mac_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `01-aa-bb-cc-dd-ee-ff`: the ARP-type-1 MAC file name of pxelinux and GRUB, and the
/// form of pxelinux's `BOOTIF=`.
pub fn mac_file(m: [u8; 6]) -> String {
    format!(
        "01-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// An IPv4 network: address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    pub fn first(&self) -> u32 {
        u32::from(self.addr)
    }
    pub fn last(&self) -> u32 {
        self.first() | (u32::MAX.checked_shr(self.prefix as u32).unwrap_or(0))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let i = u32::from(ip);
        i >= self.first() && i <= self.last()
    }
    /// An address a host or router of this subnet may take: inside it and, below /31
    /// (which has none, RFC 3021), neither its network nor its broadcast address.
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        let i = u32::from(ip);
        self.contains(ip) && (self.prefix >= 31 || (i != self.first() && i != self.last()))
    }
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(!(u32::MAX.checked_shr(self.prefix as u32).unwrap_or(0)))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `a.b.c.d/p`; host bits must be zero.
pub fn parse_cidr(s: &str) -> Result<Net, BadCidr> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| BadCidr::NotCidr(s.to_string()))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| BadCidr::Address {
        subnet: s.to_string(),
        addr: a.to_string(),
    })?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| BadCidr::Prefix {
            subnet: s.to_string(),
            prefix: p.to_string(),
        })?;
    let host_mask = u32::MAX.checked_shr(prefix as u32).unwrap_or(0);
    if u32::from(addr) & host_mask != 0 {
        return Err(BadCidr::HostBits {
            subnet: s.to_string(),
            base: Ipv4Addr::from(u32::from(addr) & !host_mask),
            prefix,
        });
    }
    Ok(Net { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_in_every_written_form() {
        let m = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x0c];
        assert_eq!(parse_mac(&mac_string(m)), Ok(m));
        assert_eq!(parse_mac("52-54-00-AA-BB-0C"), Ok(m));
        assert_eq!(mac_string(m), "52:54:00:aa:bb:0c");
        assert_eq!(mac_file(m), "01-52-54-00-aa-bb-0c");
        assert_eq!(parse_mac(&mac_file(m)[3..]), Ok(m));
    }

    #[test]
    fn bad_macs_are_refused_by_name() {
        for bad in [
            "",
            "52:54:00:aa:bb",
            "52:54:00:aa:bb:cc:dd",
            "52:54:00:aa:bb:c",
            "52:54:00:aa:bb:ccc",
            "52:54:00:aa:bb:zz",
            "52:54:00:aa:bb:+c",
            "5254.00aa.bbcc",
            "é2:54:00:aa:bb:cc",
            &"52:".repeat(100_000),
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert!(
                e.to_string().contains("is not six hex bytes"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn subnets_parse_and_refuse_with_reasons() {
        let n = parse_cidr("172.20.0.0/27").unwrap();
        assert_eq!(n.to_string(), "172.20.0.0/27");
        assert_eq!(parse_cidr(&n.to_string()), Ok(n));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 224));
        assert_eq!((n.first(), n.last()), (0xAC14_0000, 0xAC14_001F));
        assert!(n.contains(Ipv4Addr::new(172, 20, 0, 31)));
        assert!(!n.contains(Ipv4Addr::new(172, 20, 0, 32)));
        let all = parse_cidr("0.0.0.0/0").unwrap();
        assert_eq!((all.first(), all.last()), (0, u32::MAX));
        assert_eq!(all.netmask(), Ipv4Addr::new(0, 0, 0, 0));
        let host = parse_cidr("10.0.0.7/32").unwrap();
        assert_eq!(host.netmask(), Ipv4Addr::new(255, 255, 255, 255));
        for (bad, why) in [
            ("10.0.0.0", "is not CIDR"),
            ("10.0.0/24", "is not an IPv4 address"),
            ("10.0.0.0/33", "prefix `33` is not 0-32"),
            ("10.0.0.0/-1", "is not 0-32"),
            ("10.0.0.0/999999999999", "is not 0-32"),
            ("10.0.0.1/24", "did you mean 10.0.0.0/24?"),
        ] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

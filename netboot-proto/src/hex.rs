//! Hex-IP names, as pxelinux and GRUB look up their config files and the agent looks up
//! its subnet's `etc/bootopts/<HEX>`: a client at 172.20.0.5 tries `AC140005`, `AC14000`,
//! `AC1400`, … `A`. A name of k hex digits matches the aligned block of 2^(32-4k)
//! addresses that share those digits. (Which names cover a subnet exactly is the boot-tree
//! writer's business: `pxe_builder::hex::hex_cover`.)

use std::net::Ipv4Addr;

/// Upper-case hex of an address, 8 digits.
pub fn hex_ip(ip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from(ip))
}

/// The hex names a client at `ip` tries, longest (8 digits) first.
pub fn hex_prefixes(ip: Ipv4Addr) -> Vec<String> {
    let h = hex_ip(ip);
    (1..=h.len()).rev().map(|k| h[..k].to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_of_an_address() {
        let ip = Ipv4Addr::new(172, 20, 0, 5);
        assert_eq!(hex_ip(ip), "AC140005");
        assert_eq!(hex_ip(Ipv4Addr::new(10, 0, 0, 255)), "0A0000FF");
        let p = hex_prefixes(ip);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], "AC140005");
        assert_eq!(p[1], "AC14000");
        assert_eq!(p[7], "A");
        assert!(p.windows(2).all(|w| w[0].starts_with(&w[1])));
    }
}

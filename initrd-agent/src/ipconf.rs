//! What the boot interface gets — address, netmask and default gateway, each with where
//! it came from ([`Settings`]) — decided by pure functions, so every boot path's case is
//! a unit test; [`crate::net`] does the asking (DHCP) and the ioctls.
//!
//! The order: `ip=` on the kernel command line (address, mask, gateway) → an address
//! without a mask (`netboot.ip=`, or `ip=` without one): DHCP (busybox `udhcpc`) supplies
//! mask and router → no address at all: DHCP supplies everything ([`initial`]). An
//! address is never set without a mask: the kernel would pick the classful one (a /16
//! for 172.20.1.9), the image server in another subnet would look local, and every
//! request would end in "No route to host". Once the subnet's bootopts are in,
//! [`with_bootopts`] fills what is still missing (the gateway); where they disagree with
//! what the boot path gave, the boot path's value stays, because the firmware has
//! already reached the TFTP server with it, and the console says both.

use crate::config::{Address, Origin};
use netboot_proto::net::Net;
use std::net::Ipv4Addr;

/// Why DHCP could not give what was needed (the DHCP client's error, or a lease that
/// lacks the netmask).
pub type DhcpFailure = Box<dyn std::error::Error + Send + Sync>;

/// An address that cannot be configured as the boot path gave it. The messages name the
/// interface, the address and what is missing; a DHCP failure is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("refusing to set {ip} on {iface} without a netmask ({missing}); the kernel would pick the classful /{classful} and a server in another subnet would look local. Put ip=client::gateway:netmask on the kernel line (pxe-builder's GRUB and iPXE entries carry it) or have DHCP answer on {iface} with a subnet mask")]
    NoNetmask {
        iface: String,
        ip: Ipv4Addr,
        /// Which source gave the address and which could not give the mask.
        missing: String,
        classful: u32,
        #[source]
        dhcp: DhcpFailure,
    },
    #[error(
        "no address for {iface} on the kernel command line (ip=, netboot.ip=) and none from DHCP"
    )]
    NoAddress {
        iface: String,
        #[source]
        dhcp: DhcpFailure,
    },
    #[error("{from} gives {ip}, but DHCP on {iface} leased {lease} in another subnet ({net}): the boot path and the DHCP server disagree about this node")]
    LeaseElsewhere {
        iface: String,
        ip: Ipv4Addr,
        from: Origin,
        lease: Ipv4Addr,
        net: Net,
    },
    #[error("gateway {gateway} (from {from}) is not a router in {iface}'s subnet {net}: a default route needs a gateway on the link, other than this node")]
    GatewayOffLink {
        iface: String,
        gateway: Ipv4Addr,
        from: Origin,
        net: Net,
    },
}

/// What the interface is configured with; the mask is never unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub ip: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub ip_from: Origin,
    pub mask_from: Origin,
    /// `None` with the gateway.
    pub gateway_from: Option<Origin>,
}

impl Settings {
    /// The mask's prefix length (masks here are contiguous: `config::parse_netmask`,
    /// DHCP's option 1 checked by [`initial`], a CIDR from bootopts).
    pub fn prefix(&self) -> u8 {
        u32::from(self.mask).leading_ones() as u8
    }

    /// The subnet the interface is on.
    pub fn net(&self) -> Net {
        Net {
            addr: Ipv4Addr::from(u32::from(self.ip) & u32::from(self.mask)),
            prefix: self.prefix(),
        }
    }

    /// The settings as an [`Address`], for the configuration's later readers.
    pub fn address(&self) -> Address {
        Address {
            ip: self.ip,
            netmask: Some(self.mask),
            gateway: self.gateway,
            from: self.ip_from,
        }
    }

    /// The console line: `network: eth0 (52:54:…) 172.20.1.9/24 gateway 172.20.1.1
    /// (address from netboot.ip=, mask and gateway from DHCP)`; `gateway none` when
    /// there is none.
    pub fn line(&self, iface: &str, mac: &str) -> String {
        let gateway = self
            .gateway
            .map_or_else(|| "none".to_string(), |g| g.to_string());
        format!(
            "network: {iface} ({mac}) {}/{} gateway {gateway} ({})",
            self.ip,
            self.prefix(),
            self.sources()
        )
    }

    /// `address and mask from ip=, gateway from bootopts`: each source once, in order.
    fn sources(&self) -> String {
        let mut items = vec![("address", self.ip_from), ("mask", self.mask_from)];
        if let Some(from) = self.gateway_from {
            items.push(("gateway", from));
        }
        let mut groups: Vec<(Origin, Vec<&str>)> = vec![];
        for (what, from) in items {
            match groups.iter_mut().find(|(o, _)| *o == from) {
                Some((_, names)) => names.push(what),
                None => groups.push((from, vec![what])),
            }
        }
        groups
            .iter()
            .map(|(from, names)| {
                let names = match names.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                };
                format!("{names} from {from}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The classful prefix length the kernel gives an address set without a mask.
fn classful(ip: Ipv4Addr) -> u32 {
    match ip.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Whether `mask` is a usable contiguous netmask (DHCP's option 1 is not checked by
/// udhcpc).
fn contiguous(mask: Ipv4Addr) -> bool {
    let m = u32::from(mask);
    m != 0 && m.leading_ones() + m.trailing_zeros() == 32
}

/// Checks that `gateway` can be a default route's gateway on `net` for `ip`.
fn on_link(
    iface: &str,
    ip: Ipv4Addr,
    net: Net,
    gateway: Ipv4Addr,
    from: Origin,
) -> Result<(), AddressError> {
    // Inside the subnet, not this node, and not the subnet's network or broadcast address
    // (pxe-builder's rule for `gateway`; a /31 has neither, a /32 no router at all).
    if net.is_host_address(gateway) && gateway != ip {
        Ok(())
    } else {
        Err(AddressError::GatewayOffLink {
            iface: iface.into(),
            gateway,
            from,
            net,
        })
    }
}

/// Decides the first settings of `iface` from the command line's address (`given`) and,
/// when that lacks a mask or is absent, DHCP. `dhcp` asks for a lease, with the address
/// to request when one is known; it is only called when needed.
pub fn initial(
    iface: &str,
    given: Option<Address>,
    dhcp: impl FnOnce(Option<Ipv4Addr>) -> Result<Address, DhcpFailure>,
) -> Result<Settings, AddressError> {
    let s = match given {
        Some(a) => match a.netmask {
            Some(mask) => Settings {
                ip: a.ip,
                mask,
                gateway: a.gateway,
                ip_from: a.from,
                mask_from: a.from,
                gateway_from: a.gateway.map(|_| a.from),
            },
            None => mask_from_dhcp(iface, a, dhcp(Some(a.ip)))?,
        },
        None => {
            let lease = dhcp(None).map_err(|dhcp| AddressError::NoAddress {
                iface: iface.into(),
                dhcp,
            })?;
            mask_from_dhcp(iface, lease, Ok(lease))?
        }
    };
    if let (Some(g), Some(from)) = (s.gateway, s.gateway_from) {
        on_link(iface, s.ip, s.net(), g, from)?;
    }
    Ok(s)
}

/// `a` (no mask) completed by DHCP's `lease`: its mask and router, when the lease is on
/// `a`'s subnet; `a`'s own gateway, if it had one, stays.
fn mask_from_dhcp(
    iface: &str,
    a: Address,
    lease: Result<Address, DhcpFailure>,
) -> Result<Settings, AddressError> {
    let no_mask = |missing: String, dhcp: DhcpFailure| AddressError::NoNetmask {
        iface: iface.into(),
        ip: a.ip,
        missing,
        classful: classful(a.ip),
        dhcp,
    };
    let lease = lease.map_err(|e| {
        no_mask(
            format!("{} gave only the address, and DHCP did not answer", a.from),
            e,
        )
    })?;
    let Some(mask) = lease.netmask.filter(|m| contiguous(*m)) else {
        let e = format!(
            "the lease of {} has {}",
            lease.ip,
            lease
                .netmask
                .map_or("no subnet mask (option 1)".into(), |m| format!(
                    "the unusable subnet mask {m}"
                ))
        );
        let missing = match a.from {
            Origin::Dhcp => "DHCP gave no usable mask".to_string(),
            from => format!("{from} gave only the address, and DHCP no usable mask"),
        };
        return Err(no_mask(missing, e.into()));
    };
    let mut s = Settings {
        ip: a.ip,
        mask,
        gateway: a.gateway,
        ip_from: a.from,
        mask_from: Origin::Dhcp,
        gateway_from: a.gateway.map(|_| a.from),
    };
    let leased = Settings { ip: lease.ip, ..s };
    if leased.net() != s.net() {
        return Err(AddressError::LeaseElsewhere {
            iface: iface.into(),
            ip: a.ip,
            from: a.from,
            lease: lease.ip,
            net: leased.net(),
        });
    }
    if s.gateway.is_none() {
        s.gateway = lease.gateway;
        s.gateway_from = lease.gateway.map(|_| Origin::Dhcp);
    }
    Ok(s)
}

/// What the subnet's bootopts change on a configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The settings afterwards.
    pub settings: Settings,
    /// A default route to add.
    pub add_gateway: Option<Ipv4Addr>,
    /// Console lines about what was not taken, and why.
    pub notes: Vec<String>,
}

/// What the bootopts' `subnet` and `gateway` change on `cur`: a gateway when there is
/// none yet (and it is on the link); where they disagree with the boot path's values,
/// those stay and a note says both.
pub fn with_bootopts(cur: &Settings, subnet: Option<Net>, gateway: Option<Ipv4Addr>) -> Update {
    let mut u = Update {
        settings: *cur,
        add_gateway: None,
        notes: vec![],
    };
    let here = format!("/{} (from {})", cur.prefix(), cur.mask_from);
    match subnet {
        Some(n) if !n.contains(cur.ip) => u.notes.push(format!(
            "bootopts subnet {n} does not hold {}: ignored",
            cur.ip
        )),
        Some(n) if n.netmask() != cur.mask => u.notes.push(format!(
            "bootopts subnet {n} disagrees with the configured {here}: keeping {here}"
        )),
        _ => {}
    }
    match (gateway, cur.gateway) {
        (Some(g), None) if on_link("", cur.ip, cur.net(), g, Origin::BootOpts).is_ok() => {
            u.settings.gateway = Some(g);
            u.settings.gateway_from = Some(Origin::BootOpts);
            u.add_gateway = Some(g);
        }
        (Some(g), None) => u.notes.push(format!(
            "bootopts gateway {g} is not a router in {}: ignored",
            cur.net()
        )),
        (Some(g), Some(c)) if g != c => u.notes.push(format!(
            "bootopts gateway {g} disagrees with {c} (from {}): keeping {c}",
            cur.gateway_from.unwrap_or(cur.ip_from)
        )),
        _ => {}
    }
    u
}

/// The image server's address when `server` (`http://A.B.C.D[:port][/…]`) names one that
/// `s` cannot reach: outside the subnet with no gateway. `None` for host names.
pub fn unreachable_server(s: &Settings, server: &str) -> Option<Ipv4Addr> {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let ip: Ipv4Addr = host.parse().ok()?;
    (s.gateway.is_none() && !s.net().contains(ip) && !ip.is_loopback()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn lease(a: &str, mask: Option<&str>, router: Option<&str>) -> Address {
        Address {
            ip: ip(a),
            netmask: mask.map(ip),
            gateway: router.map(ip),
            from: Origin::Dhcp,
        }
    }

    fn no_dhcp(_: Option<Ipv4Addr>) -> Result<Address, DhcpFailure> {
        panic!("DHCP asked although the command line had everything")
    }

    /// The settings the agent configures for a kernel command line, and the line it logs.
    fn from_cmdline(
        cmdline: &str,
        dhcp: impl FnOnce(Option<Ipv4Addr>) -> Result<Address, DhcpFailure>,
    ) -> Result<(Settings, String), AddressError> {
        let c = Config::from_cmdline(cmdline).unwrap();
        let s = initial("eth0", c.address, dhcp)?;
        Ok((s, s.line("eth0", "52:54:00:00:00:09")))
    }

    #[test]
    fn pxelinux_and_grub_ip_lines_configure_mask_and_gateway_without_dhcp() {
        let (s, line) = from_cmdline(
            "ip=172.20.1.9:172.20.0.2:172.20.1.1:255.255.255.0 BOOTIF=01-52-54-00-00-00-09",
            no_dhcp,
        )
        .unwrap();
        assert_eq!(
            (s.ip, s.prefix(), s.gateway),
            (ip("172.20.1.9"), 24, Some(ip("172.20.1.1")))
        );
        assert_eq!(
            line,
            "network: eth0 (52:54:00:00:00:09) 172.20.1.9/24 gateway 172.20.1.1 (address, mask and gateway from ip=)"
        );
        // GRUB: netboot.ip= and ip= with an empty server field, in either order.
        for cmdline in [
            "netboot.ip=172.20.1.9 ip=172.20.1.9::172.20.1.1:255.255.255.0",
            "ip=172.20.1.9::172.20.1.1:255.255.255.0 netboot.ip=172.20.1.9",
        ] {
            let (g, _) = from_cmdline(cmdline, no_dhcp).unwrap();
            assert_eq!(g, s, "{cmdline}");
        }
        // A flat subnet: no gateway, said as such.
        let (s, line) =
            from_cmdline("ip=172.20.0.9:172.20.0.2:0.0.0.0:255.255.255.0", no_dhcp).unwrap();
        assert_eq!((s.gateway, s.gateway_from), (None, None));
        assert!(
            line.ends_with("172.20.0.9/24 gateway none (address and mask from ip=)"),
            "{line}"
        );
    }

    #[test]
    fn an_address_without_a_mask_takes_mask_and_router_from_dhcp() {
        // The GRUB case: netboot.ip= only. Before, 172.20.1.9/- went to the kernel.
        let mut asked = None;
        let (s, line) = from_cmdline("netboot.ip=172.20.1.9", |req| {
            asked = req;
            Ok(lease(
                "172.20.1.9",
                Some("255.255.255.0"),
                Some("172.20.1.1"),
            ))
        })
        .unwrap();
        assert_eq!(
            asked,
            Some(ip("172.20.1.9")),
            "DHCP is asked for our address"
        );
        assert_eq!(
            (s.mask, s.gateway),
            (ip("255.255.255.0"), Some(ip("172.20.1.1")))
        );
        assert!(
            line.ends_with("172.20.1.9/24 gateway 172.20.1.1 (address from netboot.ip=, mask and gateway from DHCP)"),
            "{line}"
        );
        // ip= with a gateway but no mask keeps its gateway and takes only the mask.
        let (s, line) = from_cmdline("ip=172.20.1.9::172.20.1.254:", |_| {
            Ok(lease(
                "172.20.1.9",
                Some("255.255.255.0"),
                Some("172.20.1.1"),
            ))
        })
        .unwrap();
        assert_eq!(s.gateway, Some(ip("172.20.1.254")));
        assert!(
            line.ends_with("(address and gateway from ip=, mask from DHCP)"),
            "{line}"
        );
        // No address at all: everything from DHCP.
        let (s, line) = from_cmdline("console=ttyS0", |req| {
            assert_eq!(req, None);
            Ok(lease("10.1.2.3", Some("255.255.0.0"), None))
        })
        .unwrap();
        assert_eq!((s.ip, s.prefix(), s.gateway), (ip("10.1.2.3"), 16, None));
        assert!(
            line.ends_with("10.1.2.3/16 gateway none (address and mask from DHCP)"),
            "{line}"
        );
    }

    #[test]
    fn never_an_address_without_a_mask() {
        // DHCP does not answer: refused, naming the interface, the address, the source,
        // the classful mask the kernel would have taken, and the DHCP error.
        let e = from_cmdline("netboot.ip=172.20.1.9", |_| {
            Err("DHCP on eth0 got no lease: udhcpc: no lease, failing".into())
        })
        .unwrap_err();
        assert!(matches!(&e, AddressError::NoNetmask { iface, .. } if iface == "eth0"));
        let shown = format!("{:#}", anyhow::Error::new(e));
        for part in [
            "refusing to set 172.20.1.9 on eth0 without a netmask",
            "netboot.ip= gave only the address",
            "classful /16",
            "ip=client::gateway:netmask",
            ": DHCP on eth0 got no lease",
        ] {
            assert!(shown.contains(part), "{part:?} missing from: {shown}");
        }
        // A lease without option 1, or with a mask that is no mask.
        for mask in [None, Some("255.0.255.0")] {
            let e = from_cmdline("netboot.ip=172.20.1.9", |_| {
                Ok(lease("172.20.1.9", mask, Some("172.20.1.1")))
            })
            .unwrap_err();
            let shown = format!("{:#}", anyhow::Error::new(e));
            assert!(
                shown.contains("without a netmask") && shown.contains("the lease of 172.20.1.9"),
                "{shown}"
            );
        }
        let e = from_cmdline("", |_| Ok(lease("10.0.0.5", None, None))).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "refusing to set 10.0.0.5 on eth0 without a netmask (DHCP gave no usable mask)"
            ),
            "{e}"
        );
        let e = from_cmdline("", |_| Err("no busybox".into())).unwrap_err();
        assert!(matches!(e, AddressError::NoAddress { .. }), "{e:?}");
    }

    #[test]
    fn disagreeing_sources_and_off_link_gateways_are_refused_by_name() {
        let e = from_cmdline("netboot.ip=172.20.1.9", |_| {
            Ok(lease("172.20.5.9", Some("255.255.255.0"), None))
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "netboot.ip= gives 172.20.1.9, but DHCP on eth0 leased 172.20.5.9 in another subnet (172.20.5.0/24): the boot path and the DHCP server disagree about this node"
        );
        // Another address in the same subnet: ours stays, the mask is the subnet's.
        let (s, _) = from_cmdline("netboot.ip=172.20.1.9", |_| {
            Ok(lease("172.20.1.77", Some("255.255.255.0"), None))
        })
        .unwrap();
        assert_eq!(s.ip, ip("172.20.1.9"));
        for cmdline in [
            "ip=172.20.1.9::172.20.0.1:255.255.255.0",
            "ip=172.20.1.9::172.20.1.9:24",
            // The subnet's network and broadcast addresses are no router's.
            "ip=172.20.1.9::172.20.1.0:24",
            "ip=172.20.1.9::172.20.1.255:255.255.255.0",
        ] {
            let e = from_cmdline(cmdline, no_dhcp).unwrap_err();
            assert!(
                matches!(
                    e,
                    AddressError::GatewayOffLink {
                        from: Origin::IpArg,
                        ..
                    }
                ),
                "{cmdline}: {e:?}"
            );
            assert!(e.to_string().contains("172.20.1.0/24"), "{e}");
        }
    }

    fn settings(cmdline: &str) -> Settings {
        from_cmdline(cmdline, no_dhcp).unwrap().0
    }

    #[test]
    fn bootopts_add_a_missing_gateway_and_keep_what_the_boot_path_gave() {
        let flat = settings("ip=172.20.1.9:172.20.0.2:0.0.0.0:255.255.255.0");
        let net = |s: &str| netboot_proto::net::parse_cidr(s).unwrap();
        let u = with_bootopts(&flat, Some(net("172.20.1.0/24")), Some(ip("172.20.1.1")));
        assert_eq!(u.add_gateway, Some(ip("172.20.1.1")));
        assert!(u.notes.is_empty(), "{:?}", u.notes);
        assert_eq!(
            u.settings.line("eth0", "m"),
            "network: eth0 (m) 172.20.1.9/24 gateway 172.20.1.1 (address and mask from ip=, gateway from bootopts)"
        );
        // Agreeing bootopts change nothing.
        let routed = u.settings;
        let u = with_bootopts(&routed, Some(net("172.20.1.0/24")), Some(ip("172.20.1.1")));
        assert_eq!(
            (u.settings, u.add_gateway, u.notes.len()),
            (routed, None, 0)
        );
        // Disagreeing ones are noted; the boot path's values stay.
        let u = with_bootopts(
            &routed,
            Some(net("172.20.0.0/16")),
            Some(ip("172.20.1.254")),
        );
        assert_eq!((u.settings, u.add_gateway), (routed, None));
        assert_eq!(
            u.notes,
            [
                "bootopts subnet 172.20.0.0/16 disagrees with the configured /24 (from ip=): keeping /24 (from ip=)",
                "bootopts gateway 172.20.1.254 disagrees with 172.20.1.1 (from bootopts): keeping 172.20.1.1",
            ]
        );
        // The subnet's network address is no router: ignored, said.
        let u = with_bootopts(&flat, None, Some(ip("172.20.1.0")));
        assert_eq!((u.settings, u.add_gateway), (flat, None));
        assert_eq!(u.notes.len(), 1, "{:?}", u.notes);
        // Another subnet's file, an off-link gateway: ignored, said.
        let u = with_bootopts(&flat, Some(net("10.0.0.0/8")), Some(ip("172.20.0.1")));
        assert_eq!((u.settings, u.add_gateway), (flat, None));
        assert_eq!(u.notes.len(), 2, "{:?}", u.notes);
        assert!(u.notes[1].contains("172.20.0.1 is not a router in 172.20.1.0/24"));
    }

    #[test]
    fn a_server_outside_the_subnet_without_a_gateway_is_named() {
        let flat = settings("ip=172.20.1.9::0.0.0.0:255.255.255.0");
        assert_eq!(
            unreachable_server(&flat, "http://172.20.0.100:8080"),
            Some(ip("172.20.0.100"))
        );
        assert_eq!(unreachable_server(&flat, "http://172.20.1.100/x"), None);
        assert_eq!(
            unreachable_server(&flat, "http://images.example:8080"),
            None
        );
        let routed = settings("ip=172.20.1.9::172.20.1.1:24");
        assert_eq!(
            unreachable_server(&routed, "http://172.20.0.100:8080"),
            None
        );
    }
}

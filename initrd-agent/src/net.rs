//! Bringing up the boot interface ([`bring_up`]): find it by MAC in `/sys/class/net`
//! (BOOTIF / `netboot.mac`, else the first NIC), wait for carrier, set the address,
//! netmask and default route with the classic IPv4 ioctls (in [`crate::sys`]) as
//! [`crate::ipconf`] decides them — asking DHCP through busybox's `udhcpc` (in the
//! initrd) for what the command line lacks — and later add what the subnet's bootopts
//! complete ([`apply_bootopts`]). Failures are [`NetError`]s naming the interface, with
//! the kernel's error as their source, or [`crate::ipconf::AddressError`]s.

use crate::config::{Address, Config, Origin};
use crate::ipconf::{self, Settings};
use crate::report::Reporter;
use crate::sys;
use rustix::net::{socket, AddressFamily, SocketType};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the boot interface could not be brought up. A variant's message is the context;
/// the kernel's or the program's error is its `#[source]` and follows when printed as a
/// chain (`{:#}` through anyhow): `setting eth0 up: Operation not permitted (os error 1)`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface has MAC {mac} (BOOTIF) after {secs}s; interfaces: {seen}. Is the NIC's driver in the initrd?")]
    NoInterface {
        mac: String,
        secs: u64,
        /// `name (mac)` of every interface seen, or `none`.
        seen: String,
    },
    #[error("socket")]
    Socket(#[source] io::Error),
    #[error("reading flags of {iface}")]
    ReadFlags {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("setting {iface} up")]
    SetUp {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("setting address {ip} on {iface}")]
    SetAddress {
        iface: String,
        ip: Ipv4Addr,
        #[source]
        err: io::Error,
    },
    #[error("setting netmask {mask} on {iface}")]
    SetNetmask {
        iface: String,
        mask: Ipv4Addr,
        #[source]
        err: io::Error,
    },
    #[error("adding the default route via {gateway} on {iface}")]
    AddRoute {
        iface: String,
        gateway: Ipv4Addr,
        #[source]
        err: io::Error,
    },
    #[error("no link on {iface} after {secs}s: check the cable and the switch port")]
    NoLink { iface: String, secs: u64 },
    #[error("no ip= on the kernel command line and no busybox for DHCP in the initrd")]
    NoBusybox,
    #[error("writing {}", .script.display())]
    DhcpScript {
        script: std::path::PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("running udhcpc")]
    Udhcpc {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("DHCP on {iface} got no lease: {stderr}")]
    NoLease { iface: String, stderr: String },
    #[error("DHCP lease without an address: {lease}")]
    LeaseWithoutAddress { iface: String, lease: String },
}

/// The boot interface once it is up: its name, its MAC and what it is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub iface: String,
    pub mac: String,
    pub settings: Settings,
}

/// Brings up the boot interface (from BOOTIF / netboot.mac, else the first NIC) with an
/// address, its netmask and the default route ([`crate::ipconf::initial`]: `ip=`, else
/// DHCP for what the command line lacks), says so on the console, and completes `cfg`
/// with what it learnt (the MAC, the address).
pub fn bring_up(cfg: &mut Config, rep: &Reporter) -> anyhow::Result<Link> {
    let t = Duration::from_secs(cfg.link_timeout);
    let (iface, mac) = match &cfg.mac {
        Some(mac) => (wait_iface(mac, t)?, mac.clone()),
        None => {
            std::thread::sleep(Duration::from_secs(2));
            first_iface().ok_or_else(|| {
                anyhow::anyhow!("no network interface found; is the NIC's driver in the initrd?")
            })?
        }
    };
    cfg.mac = Some(mac.clone());
    up(&iface)?;
    wait_link(&iface, t)?;
    let settings = ipconf::initial(&iface, cfg.address, |request| {
        rep.say(&match cfg.address {
            Some(a) => format!(
                "{} gave {} without a netmask: asking DHCP on {iface} for mask and router",
                a.from, a.ip
            ),
            None => format!("no ip= on the command line: asking DHCP on {iface}"),
        });
        dhcp(&iface, request).map_err(Into::into)
    })?;
    configure(&iface, &settings)?;
    cfg.address = Some(settings.address());
    rep.say(&settings.line(&iface, &mac));
    let server = cfg.server.as_deref().unwrap_or_default();
    if let Some(ip) = ipconf::unreachable_server(&settings, server) {
        rep.say(&format!(
            "warning: the image server {ip} ({server}) is outside {} and {iface} has no gateway: give the entity a gateway (cluster.toml), or DHCP option 3",
            settings.net()
        ));
    }
    Ok(Link {
        iface,
        mac,
        settings,
    })
}

/// Applies what the subnet's bootopts (in `cfg`, after [`crate::resolve`]) add to the
/// link's settings ([`crate::ipconf::with_bootopts`]: a missing gateway), says what it
/// did not take, and prints the network line again when anything changed.
pub fn apply_bootopts(link: &mut Link, cfg: &mut Config, rep: &Reporter) -> Result<(), NetError> {
    let u = ipconf::with_bootopts(&link.settings, cfg.bootopts_subnet, cfg.bootopts_gateway);
    for note in &u.notes {
        rep.say(&format!("network: {note}"));
    }
    if u.settings == link.settings {
        return Ok(());
    }
    let s = sock()?;
    if let Some(gateway) = u.add_gateway {
        add_default_route(&s, &link.iface, gateway)?;
    }
    link.settings = u.settings;
    cfg.address = Some(link.settings.address());
    rep.say(&link.settings.line(&link.iface, &link.mac));
    Ok(())
}

/// The interface whose MAC is `mac`, waiting up to `timeout` for drivers to create it.
pub fn wait_iface(mac: &str, timeout: Duration) -> Result<String, NetError> {
    let start = Instant::now();
    loop {
        let mut seen = vec![];
        if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
                if addr.trim().eq_ignore_ascii_case(mac) {
                    return Ok(name);
                }
                seen.push(format!("{name} ({})", addr.trim()));
            }
        }
        if start.elapsed() > timeout {
            seen.sort();
            return Err(NetError::NoInterface {
                mac: mac.to_string(),
                secs: timeout.as_secs(),
                seen: if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                },
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first interface with a MAC that is not loopback (when BOOTIF is unknown).
pub fn first_iface() -> Option<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let mac = std::fs::read_to_string(e.path().join("address"))
                .ok()?
                .trim()
                .to_string();
            (name != "lo" && mac != "00:00:00:00:00:00").then_some((name, mac))
        })
        .collect();
    v.sort();
    v.into_iter().next()
}

/// A socket for the interface ioctls.
fn sock() -> Result<OwnedFd, NetError> {
    socket(AddressFamily::INET, SocketType::DGRAM, None).map_err(|e| NetError::Socket(e.into()))
}

/// Sets the interface up (no address).
pub fn up(iface: &str) -> Result<(), NetError> {
    let s = sock()?;
    let flags = sys::if_flags(&s, iface).map_err(|err| NetError::ReadFlags {
        iface: iface.into(),
        err,
    })?;
    sys::set_if_flags(
        &s,
        iface,
        flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short,
    )
    .map_err(|err| NetError::SetUp {
        iface: iface.into(),
        err,
    })
}

/// Assigns the address and netmask of `s` to `iface`, brings it up, and adds the default
/// route when there is a gateway.
pub fn configure(iface: &str, s: &Settings) -> Result<(), NetError> {
    up("lo").ok();
    let sock = sock()?;
    sys::set_if_addr(&sock, iface, s.ip).map_err(|err| NetError::SetAddress {
        iface: iface.into(),
        ip: s.ip,
        err,
    })?;
    set_netmask(&sock, iface, s.mask)?;
    up(iface)?;
    if let Some(gateway) = s.gateway {
        add_default_route(&sock, iface, gateway)?;
    }
    Ok(())
}

fn set_netmask(sock: &OwnedFd, iface: &str, mask: Ipv4Addr) -> Result<(), NetError> {
    sys::set_if_netmask(sock, iface, mask).map_err(|err| NetError::SetNetmask {
        iface: iface.into(),
        mask,
        err,
    })
}

fn add_default_route(sock: &OwnedFd, iface: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
    sys::add_default_route(sock, iface, gateway).map_err(|err| NetError::AddRoute {
        iface: iface.into(),
        gateway,
        err,
    })
}

/// Waits for carrier on `iface`.
pub fn wait_link(iface: &str, timeout: Duration) -> Result<(), NetError> {
    let start = Instant::now();
    let path = format!("/sys/class/net/{iface}/carrier");
    while start.elapsed() < timeout {
        if std::fs::read_to_string(&path)
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(NetError::NoLink {
        iface: iface.into(),
        secs: timeout.as_secs(),
    })
}

/// DHCP through busybox `udhcpc` (the initrd carries it), asking for `request` when the
/// address is known; returns the lease (address, subnet mask, first router).
pub fn dhcp(iface: &str, request: Option<Ipv4Addr>) -> Result<Address, NetError> {
    dhcp_via(iface, request, Path::new("/run/netboot-udhcpc.sh"))
}

/// [`dhcp`] with udhcpc's event script written to `script` (tests keep it in their own
/// directory).
pub fn dhcp_via(
    iface: &str,
    request: Option<Ipv4Addr>,
    script: &Path,
) -> Result<Address, NetError> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(bb) = busybox else {
        return Err(NetError::NoBusybox);
    };
    std::fs::write(script, "#!/bin/busybox sh\n[ \"$1\" = bound ] && echo \"LEASE $ip ${subnet:-0.0.0.0} ${router%% *}\"\nexit 0\n")
        .map_err(|err| NetError::DhcpScript {
            script: script.into(),
            err,
        })?;
    let _ = std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let mut cmd = std::process::Command::new(bb);
    cmd.args([
        "udhcpc", "-i", iface, "-f", "-q", "-n", "-t", "6", "-T", "2", "-s",
    ]);
    cmd.arg(script);
    if let Some(ip) = request {
        cmd.args(["-r", &ip.to_string()]);
    }
    let out = cmd.output().map_err(|err| NetError::Udhcpc {
        iface: iface.into(),
        err,
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lease = text
        .lines()
        .find_map(|l| l.strip_prefix("LEASE "))
        .ok_or_else(|| NetError::NoLease {
            iface: iface.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })?;
    let f: Vec<&str> = lease.split_whitespace().collect();
    let parse = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_unspecified())
    };
    Ok(Address {
        ip: parse(0).ok_or_else(|| NetError::LeaseWithoutAddress {
            iface: iface.into(),
            lease: lease.to_string(),
        })?,
        netmask: parse(1),
        gateway: parse(2),
        from: Origin::Dhcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ioctl_failure_names_the_interface_and_keeps_the_kernels_error() {
        // No root needed: the kernel answers ENODEV for an interface that does not exist
        // before it looks at permissions.
        let e = up("nbtest-none0").unwrap_err();
        assert!(
            matches!(&e, NetError::ReadFlags { iface, .. } if iface == "nbtest-none0"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "reading flags of nbtest-none0");
        let src = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::raw_os_error);
        assert_eq!(src, Some(Some(libc::ENODEV)), "{e:?}");
        // As the console prints it: the context, then the cause, once.
        let shown = format!("{:#}", anyhow::Error::new(e));
        assert!(
            shown.starts_with("reading flags of nbtest-none0: ") && shown.contains("os error"),
            "{shown}"
        );
    }

    #[test]
    fn no_link_names_the_interface_and_the_wait() {
        let e = wait_link("nbtest-none0", Duration::ZERO).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no link on nbtest-none0 after 0s: check the cable and the switch port"
        );
    }
}

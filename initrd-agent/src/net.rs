//! Bringing up the boot interface ([`bring_up`]): find it by MAC in `/sys/class/net`
//! (BOOTIF / `netboot.mac`, else the first NIC), set the address, netmask and default
//! route with the classic IPv4 ioctls (in [`crate::sys`]), wait for carrier. Without an
//! address on the command line, busybox's `udhcpc` (in the initrd) asks DHCP and we
//! apply its answer.

use crate::config::{Address, Config};
use crate::report::Reporter;
use crate::sys;
use rustix::net::{socket, AddressFamily, SocketType};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Brings up the boot interface (from BOOTIF / netboot.mac, else the first NIC) and
/// completes `cfg` with what it learnt (the MAC, a DHCP lease).
pub fn bring_up(cfg: &mut Config, rep: &Reporter) -> anyhow::Result<()> {
    let t = Duration::from_secs(cfg.link_timeout);
    let iface = match &cfg.mac {
        Some(mac) => wait_iface(mac, t).map_err(anyhow::Error::msg)?,
        None => {
            std::thread::sleep(Duration::from_secs(2));
            let (i, mac) = first_iface().ok_or_else(|| {
                anyhow::anyhow!("no network interface found; is the NIC's driver in the initrd?")
            })?;
            cfg.mac = Some(mac);
            i
        }
    };
    up(&iface).map_err(anyhow::Error::msg)?;
    wait_link(&iface, t).map_err(anyhow::Error::msg)?;
    let addr = match cfg.address {
        Some(a) => a,
        None => {
            rep.say(&format!(
                "no ip= on the command line: asking DHCP on {iface}"
            ));
            let a = dhcp(&iface).map_err(anyhow::Error::msg)?;
            cfg.address = Some(a);
            a
        }
    };
    configure(&iface, &addr).map_err(anyhow::Error::msg)?;
    rep.say(&format!(
        "network: {iface} ({}) {}/{} gateway {}",
        cfg.mac.as_deref().unwrap_or("?"),
        addr.ip,
        addr.netmask.map(|m| m.to_string()).unwrap_or("-".into()),
        addr.gateway.map(|g| g.to_string()).unwrap_or("-".into())
    ));
    Ok(())
}

/// The interface whose MAC is `mac`, waiting up to `timeout` for drivers to create it.
pub fn wait_iface(mac: &str, timeout: Duration) -> Result<String, String> {
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
            return Err(format!(
                "no network interface has MAC {mac} (BOOTIF) after {}s; interfaces: {}. Is the NIC's driver in the initrd?",
                timeout.as_secs(),
                if seen.is_empty() { "none".into() } else { seen.join(", ") }
            ));
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
fn sock() -> Result<OwnedFd, String> {
    socket(AddressFamily::INET, SocketType::DGRAM, None)
        .map_err(|e| format!("socket: {}", std::io::Error::from(e)))
}

/// Sets the interface up (no address).
pub fn up(iface: &str) -> Result<(), String> {
    let s = sock()?;
    let flags = sys::if_flags(&s, iface).map_err(|e| format!("reading flags of {iface}: {e}"))?;
    sys::set_if_flags(
        &s,
        iface,
        flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short,
    )
    .map_err(|e| format!("setting {iface} up: {e}"))
}

/// Assigns `a` to `iface`, brings it up, and adds the default route when there is one.
pub fn configure(iface: &str, a: &Address) -> Result<(), String> {
    up("lo").ok();
    let s = sock()?;
    sys::set_if_addr(&s, iface, a.ip)
        .map_err(|e| format!("setting address {} on {iface}: {e}", a.ip))?;
    if let Some(m) = a.netmask {
        sys::set_if_netmask(&s, iface, m)
            .map_err(|e| format!("setting netmask {m} on {iface}: {e}"))?;
    }
    up(iface)?;
    if let Some(gw) = a.gateway {
        sys::add_default_route(&s, iface, gw)
            .map_err(|e| format!("adding default route via {gw}: {e}"))?;
    }
    Ok(())
}

/// Waits for carrier on `iface`.
pub fn wait_link(iface: &str, timeout: Duration) -> Result<(), String> {
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
    Err(format!(
        "no link on {iface} after {}s: check the cable and the switch port",
        timeout.as_secs()
    ))
}

/// DHCP through busybox `udhcpc` (the initrd carries it); returns the lease.
pub fn dhcp(iface: &str) -> Result<Address, String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(bb) = busybox else {
        return Err(
            "no ip= on the kernel command line and no busybox for DHCP in the initrd".into(),
        );
    };
    let script = "/run/netboot-udhcpc.sh";
    std::fs::write(script, "#!/bin/busybox sh\n[ \"$1\" = bound ] && echo \"LEASE $ip ${subnet:-0.0.0.0} ${router%% *}\"\nexit 0\n")
        .map_err(|e| format!("writing {script}: {e}"))?;
    let _ = std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let out = std::process::Command::new(bb)
        .args([
            "udhcpc", "-i", iface, "-f", "-q", "-n", "-t", "6", "-T", "2", "-s", script,
        ])
        .output()
        .map_err(|e| format!("running udhcpc: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lease = text
        .lines()
        .find_map(|l| l.strip_prefix("LEASE "))
        .ok_or_else(|| {
            format!(
                "DHCP on {iface} got no lease: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let f: Vec<&str> = lease.split_whitespace().collect();
    let parse = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_unspecified())
    };
    Ok(Address {
        ip: parse(0).ok_or_else(|| format!("DHCP lease without an address: {lease}"))?,
        netmask: parse(1),
        gateway: parse(2),
    })
}

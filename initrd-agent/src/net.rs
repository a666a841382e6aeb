//! Bringing up the boot interface: find it by MAC in `/sys/class/net`, set the address,
//! netmask and default route with the classic IPv4 ioctls (`SIOCSIFADDR`,
//! `SIOCSIFNETMASK`, `SIOCSIFFLAGS`, `SIOCADDRT`), wait for carrier. Without an address on
//! the command line, busybox's `udhcpc` (in the initrd) asks DHCP and we apply its answer.

use crate::config::Address;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

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

struct Sock(libc::c_int);

impl Sock {
    fn new() -> Result<Sock, String> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        Ok(Sock(fd))
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name {name} too long"));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().enumerate() {
        r.ifr_name[i] = b as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the API is used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(s: &Sock, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<(), String> {
    // SAFETY: `arg` points to a live struct of the type `req` expects.
    if unsafe { libc::ioctl(s.0, req as _, arg) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets the interface up (no address).
pub fn up(iface: &str) -> Result<(), String> {
    let s = Sock::new()?;
    let mut r = ifreq(iface)?;
    ioctl(
        &s,
        libc::SIOCGIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("reading flags of {iface}"),
    )?;
    // SAFETY: the flags member of the union was just filled by SIOCGIFFLAGS.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        &s,
        libc::SIOCSIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("setting {iface} up"),
    )
}

/// Assigns `a` to `iface`, brings it up, and adds the default route when there is one.
pub fn configure(iface: &str, a: &Address) -> Result<(), String> {
    up("lo").ok();
    let s = Sock::new()?;
    let mut r = ifreq(iface)?;
    r.ifr_ifru.ifru_addr = sockaddr(a.ip);
    ioctl(
        &s,
        libc::SIOCSIFADDR,
        &mut r as *mut _ as *mut _,
        &format!("setting address {} on {iface}", a.ip),
    )?;
    if let Some(m) = a.netmask {
        let mut r = ifreq(iface)?;
        r.ifr_ifru.ifru_netmask = sockaddr(m);
        ioctl(
            &s,
            libc::SIOCSIFNETMASK,
            &mut r as *mut _ as *mut _,
            &format!("setting netmask {m} on {iface}"),
        )?;
    }
    up(iface)?;
    if let Some(gw) = a.gateway {
        // SAFETY: rtentry is plain old data; all-zero is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
        let dev = std::ffi::CString::new(iface).map_err(|e| e.to_string())?;
        rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
        ioctl(
            &s,
            libc::SIOCADDRT,
            &mut rt as *mut _ as *mut _,
            &format!("adding default route via {gw}"),
        )?;
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

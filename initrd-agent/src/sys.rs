//! The kernel calls no crate offers safely, each behind a safe function with its one
//! `unsafe` line. Everything else the agent asks of the kernel goes through `rustix`
//! (mount, reboot, `finit_module`, waitpid, sync, sockets), and block devices through
//! imgtool.
//!
//! What is here and why:
//! - the classic IPv4 interface ioctls `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, `SIOCSIFADDR`,
//!   `SIOCSIFNETMASK` (on `struct ifreq`) and `SIOCADDRT` (on `struct rtentry`). Neither
//!   rustix nor nix wraps them (nix has the ioctl macros, which are `unsafe` to call just
//!   the same; the maintained alternative is rtnetlink, a netlink message stack for a job
//!   of four ioctls). The request numbers and both structs are `libc`'s — nothing is
//!   declared by hand — and the ioctl goes through rustix's typed `ioctl` patterns.
//!   What remains `unsafe` is the claim that a request number takes that struct.

use rustix::ioctl::{ioctl, Opcode, Setter, Updater};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

/// An `ifreq` naming `iface`, the rest zero.
fn ifreq(iface: &str) -> io::Result<libc::ifreq> {
    if iface.len() >= libc::IFNAMSIZ || iface.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {iface} too long"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name and a union of plain values): all-zero is a
    // valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in iface.bytes().enumerate() {
        r.ifr_name[i] = b as libc::c_char;
    }
    Ok(r)
}

/// `ip` as the `struct sockaddr` of an `AF_INET` address: family, port 0, then the
/// address's four bytes (the layout of `sockaddr_in` inside `sa_data`).
fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    for (d, b) in data[2..6].iter_mut().zip(ip.octets()) {
        *d = b as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

/// The interface flags of `iface` (`SIOCGIFFLAGS`).
pub fn if_flags(sock: impl AsFd, iface: &str) -> io::Result<libc::c_short> {
    let mut r = ifreq(iface)?;
    // SAFETY: SIOCGIFFLAGS reads a `struct ifreq` (the name) and fills its flags.
    let r = unsafe {
        let get = Updater::<{ libc::SIOCGIFFLAGS as Opcode }, libc::ifreq>::new(&mut r);
        ioctl(sock, get)?;
        r
    };
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled.
    Ok(unsafe { r.ifr_ifru.ifru_flags })
}

/// Sets the interface flags of `iface` (`SIOCSIFFLAGS`).
pub fn set_if_flags(sock: impl AsFd, iface: &str, flags: libc::c_short) -> io::Result<()> {
    let mut r = ifreq(iface)?;
    r.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOCSIFFLAGS takes a `struct ifreq` with the name and the flags.
    unsafe {
        ioctl(
            sock,
            Setter::<{ libc::SIOCSIFFLAGS as Opcode }, libc::ifreq>::new(r),
        )
    }?;
    Ok(())
}

/// Sets the IPv4 address of `iface` (`SIOCSIFADDR`).
pub fn set_if_addr(sock: impl AsFd, iface: &str, ip: Ipv4Addr) -> io::Result<()> {
    let mut r = ifreq(iface)?;
    r.ifr_ifru.ifru_addr = sockaddr(ip);
    // SAFETY: SIOCSIFADDR takes a `struct ifreq` with the name and the address.
    unsafe {
        ioctl(
            sock,
            Setter::<{ libc::SIOCSIFADDR as Opcode }, libc::ifreq>::new(r),
        )
    }?;
    Ok(())
}

/// Sets the IPv4 netmask of `iface` (`SIOCSIFNETMASK`).
pub fn set_if_netmask(sock: impl AsFd, iface: &str, mask: Ipv4Addr) -> io::Result<()> {
    let mut r = ifreq(iface)?;
    r.ifr_ifru.ifru_netmask = sockaddr(mask);
    // SAFETY: SIOCSIFNETMASK takes a `struct ifreq` with the name and the netmask.
    unsafe {
        ioctl(
            sock,
            Setter::<{ libc::SIOCSIFNETMASK as Opcode }, libc::ifreq>::new(r),
        )
    }?;
    Ok(())
}

/// Adds the default route via `gateway` on `iface` (`SIOCADDRT`).
pub fn add_default_route(sock: impl AsFd, iface: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let dev = std::ffi::CString::new(iface)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: rtentry is plain old data (addresses, numbers, a null device pointer):
    // all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gateway);
    rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
    rt.rt_dev = dev.as_ptr().cast_mut();
    // SAFETY: SIOCADDRT takes a `struct rtentry`; its device name pointer is `dev`, alive
    // until this call returns.
    unsafe {
        ioctl(
            sock,
            Setter::<{ libc::SIOCADDRT as Opcode }, libc::rtentry>::new(rt),
        )
    }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_sockaddr_is_laid_out_as_sockaddr_in() {
        let sa = sockaddr(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let d: Vec<u8> = sa.sa_data.iter().map(|b| *b as u8).collect();
        assert_eq!(d, [0, 0, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(ifreq("0123456789abcdef").is_err());
        assert!(ifreq("eth0").is_ok());
    }

    #[test]
    fn loopback_flags_are_read() {
        // Any process may read flags; `lo` exists in every network namespace.
        let s = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .unwrap();
        let f = if_flags(&s, "lo").unwrap();
        assert_ne!(f & libc::IFF_LOOPBACK as libc::c_short, 0);
        assert!(if_flags(&s, "nonexistent0").is_err());
    }
}

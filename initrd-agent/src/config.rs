//! The agent's configuration: the kernel command line first (`BOOTIF=`, `ip=` from
//! pxelinux's IPAPPEND 3; `netboot.*` keys from our boot entries, GRUB's and iPXE's
//! `netboot.mac=`/`netboot.ip=`), then the subnet's `etc/bootopts/<HEX>` for whatever the
//! command line left open. Pure parsing; fetching lives in `clone`. A value that breaks
//! the rules is a [`ConfigError`] naming the key and value.

use netboot_proto::bootopts::{self, BootOpts};
use netboot_proto::names::{image_id, name, Kind};
use netboot_proto::net::{mac_string, parse_cidr, parse_mac, Net};
use std::net::Ipv4Addr;

/// A command-line word or a resolved name that is not what its key needs. The messages
/// name the word (`BOOTIF=01-zz`) or the name and the rule it breaks; they carry no
/// source (the parsers say what is wrong, not why a system call failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `key=value` word of the kernel command line; `what` is the kind of value the key
    /// takes (`MAC`, `IPv4 address`, `action (reboot, poweroff, wait)`, …).
    #[error("kernel command line: `{word}` is not a valid {what}")]
    BadWord { word: String, what: &'static str },
    /// A node, entity, group or image name (from the command line or the network's
    /// bootopts) outside the naming rules.
    #[error("boot configuration: {what} {}: {why}", .value.escape_debug())]
    BadName {
        what: &'static str,
        value: String,
        why: String,
    },
    /// An image id pin that is not 64 lower-case hex digits.
    #[error("boot configuration: {why}")]
    BadImageId { value: String, why: String },
}

/// What to do when the work is over, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reboot,
    Poweroff,
    /// Stay up (print the error, keep the console) until someone acts.
    Wait,
}

impl After {
    fn parse(s: &str) -> Option<After> {
        match s {
            "reboot" => Some(After::Reboot),
            "poweroff" => Some(After::Poweroff),
            "wait" => Some(After::Wait),
            _ => None,
        }
    }
}

/// Where a network setting came from, as the console names it (`… from ip=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `ip=client:server:gw:mask` (pxelinux's `IPAPPEND`, our GRUB and iPXE entries).
    IpArg,
    /// `netboot.ip=`: an address only.
    NetbootIp,
    /// busybox `udhcpc`'s lease (options 1 and 3).
    Dhcp,
    /// The subnet's `etc/bootopts/<HEX>` (`subnet=`, `gateway=`).
    BootOpts,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::IpArg => "ip=",
            Origin::NetbootIp => "netboot.ip=",
            Origin::Dhcp => "DHCP",
            Origin::BootOpts => "bootopts",
        })
    }
}

/// The node's address as one source told it; what is missing is `None` (a netmask or
/// gateway of `0.0.0.0` reads as missing, as the kernel's `ip=` takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: Ipv4Addr,
    pub netmask: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub from: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: Option<String>,
    pub node: Option<String>,
    pub entity: Option<String>,
    pub group: Option<String>,
    pub image: Option<String>,
    /// `clone`, `diskless`, `vsmp`, `vsmp-diskless`, `discover`.
    pub mode: String,
    /// Boot interface MAC, lower-case colon form.
    pub mac: Option<String>,
    /// From the command line; after [`crate::net::bring_up`], what the interface has.
    pub address: Option<Address>,
    /// The subnet's bootopts `subnet=` and `gateway=` ([`crate::ipconf::with_bootopts`]
    /// applies them once they are fetched); `None` when absent or malformed.
    pub bootopts_subnet: Option<Net>,
    pub bootopts_gateway: Option<Ipv4Addr>,
    /// Target disk hints (`serial=…,model=…,size>=…,path=…,wwn=…`).
    pub target: Option<String>,
    pub on_done: After,
    pub on_error: After,
    /// Seconds to wait for the boot interface's link.
    pub link_timeout: u64,
    /// Where the clone plan says to pull from (a node name or `primary`).
    pub upstream: Option<String>,
    /// `netboot.image_id=<sha256>`: the only image id this node accepts (docs/TRUST.md).
    pub image_id: Option<String>,
    /// `netboot.delta=0|1` (else the bootopts' `delta=`): whether a disk whose layout
    /// equals the image's fetches only the chunks it lacks. `None`: not said, on.
    pub delta: Option<bool>,
    /// `netboot.root=N`: a diskless node's root partition in the image (docs/AGENT.md).
    pub root: Option<u32>,
    /// Backup mode ([`crate::backup`]): `netboot.token=`, the one-time upload token, and
    /// `netboot.partitions=1,2,4`, the partitions to capture (none: all).
    pub backup: BackupKeys,
}

/// The backup mode's command-line keys (only on the entry `pxe-builder backup` writes;
/// never in a subnet's bootopts, which every client may read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupKeys {
    pub token: Option<String>,
    pub partitions: Option<Vec<u32>>,
}

/// Longest upload token taken from the command line.
pub const MAX_TOKEN: usize = 128;
/// Most partitions `netboot.partitions=` may name (GPT's usual table holds 128).
pub const MAX_PARTITIONS: usize = 128;

/// `netboot.token=`: 16 to [`MAX_TOKEN`] of `[A-Za-z0-9_-]`, as `imgtool serve` takes them (an HTTP
/// header and is printed shortened; nothing else).
fn parse_token(v: &str) -> Option<String> {
    let ok = (16..=MAX_TOKEN).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_string())
}

/// `netboot.partitions=1,2,4`: partition numbers 1-65535, each once, at most
/// [`MAX_PARTITIONS`] of them.
fn parse_partitions(v: &str) -> Option<Vec<u32>> {
    let mut out: Vec<u32> = vec![];
    for p in v.split(',') {
        let n: u32 = p.parse().ok().filter(|n| (1..=65535).contains(n))?;
        if out.contains(&n) || out.len() >= MAX_PARTITIONS {
            return None;
        }
        out.push(n);
    }
    Some(out)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: None,
            node: None,
            entity: None,
            group: None,
            image: None,
            mode: "discover".into(),
            mac: None,
            address: None,
            bootopts_subnet: None,
            bootopts_gateway: None,
            target: None,
            on_done: After::Reboot,
            on_error: After::Wait,
            link_timeout: 30,
            upstream: None,
            image_id: None,
            delta: None,
            root: None,
            backup: BackupKeys::default(),
        }
    }
}

/// Splits a command line into words, honouring double quotes.
fn words(cmdline: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    for ch in cmdline.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `01-aa-bb-cc-dd-ee-ff` (pxelinux) or `aa:bb:…` / `aa-bb-…` → `aa:bb:cc:dd:ee:ff`.
pub fn normalize_mac(s: &str) -> Option<String> {
    let s = s.trim();
    let s = if s.len() == 20 && (s.starts_with("01-") || s.starts_with("01:")) {
        &s[3..]
    } else {
        s
    };
    parse_mac(s).ok().map(mac_string)
}

/// What `ip=` names when its value is no address but one of the kernel's own
/// autoconfiguration words: the agent then asks DHCP itself, as without `ip=`.
const IP_KEYWORDS: [&str; 8] = ["", "dhcp", "on", "any", "bootp", "rarp", "both", "off"];

/// The kinds of value a bad `ip=` word lacks, as [`ConfigError::BadWord`] names them.
const IP_FORM: &str = "ip=client:server:gw:mask";
const IP_GATEWAY: &str =
    "ip=client:server:gw:mask (gw: an IPv4 address, or empty or 0.0.0.0 for none)";
const IP_MASK: &str = "ip=client:server:gw:mask (mask: a contiguous dotted netmask like 255.255.255.0, or a prefix length 1-32)";

/// A netmask as `ip=` may give it: dotted and contiguous (`255.255.255.0`), or a prefix
/// length (`24`). `Ok(None)` for empty and `0.0.0.0` (none given); the error is what
/// [`ConfigError::BadWord`] says the mask must be.
fn parse_netmask(s: &str) -> Result<Option<Ipv4Addr>, &'static str> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        let p: u32 = s.parse().map_err(|_| IP_MASK)?;
        if !(1..=32).contains(&p) {
            return Err(IP_MASK);
        }
        return Ok(Some(Ipv4Addr::from(u32::MAX << (32 - p))));
    }
    let m: Ipv4Addr = s.parse().map_err(|_| IP_MASK)?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(IP_MASK);
    }
    Ok(Some(m).filter(|m| !m.is_unspecified()))
}

/// Parses `ip=client:server:gw:netmask[:…]`, the kernel's nfsroot form: pxelinux writes
/// all four (gw `0.0.0.0` when DHCP gave none), our GRUB and iPXE entries leave the
/// server empty (`ip=172.20.1.9::172.20.1.1:255.255.255.0`). Empty fields are missing;
/// the server field is not used (the image server is `netboot.server`). The error is
/// the kind of value that is wrong, for [`ConfigError::BadWord`].
fn parse_ip_arg(v: &str) -> Result<Address, &'static str> {
    let mut f = v.split(':');
    let ip: Ipv4Addr = f
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|a: &Ipv4Addr| !a.is_unspecified())
        .ok_or(IP_FORM)?;
    let _server = f.next();
    let gateway = match f.next().unwrap_or("") {
        "" => None,
        g => Some(g.parse::<Ipv4Addr>().map_err(|_| IP_GATEWAY)?),
    };
    let netmask = parse_netmask(f.next().unwrap_or(""))?;
    Ok(Address {
        ip,
        netmask,
        gateway: gateway.filter(|g| !g.is_unspecified()),
        from: Origin::IpArg,
    })
}

impl Config {
    /// Reads the kernel command line. Later keys win over earlier ones.
    pub fn from_cmdline(cmdline: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for w in words(cmdline) {
            let (k, v) = w.split_once('=').unwrap_or((w.as_str(), ""));
            let bad = |what: &'static str| ConfigError::BadWord {
                word: w.clone(),
                what,
            };
            match k {
                "BOOTIF" | "netboot.mac" => {
                    c.mac = Some(normalize_mac(v).ok_or_else(|| bad("MAC"))?)
                }
                // An empty client field is the kernel's "autoconfigure" too.
                "ip" if !IP_KEYWORDS.contains(&v) && !v.starts_with(':') => {
                    c.address = Some(parse_ip_arg(v).map_err(bad)?)
                }
                // Empty: GRUB's or iPXE's address variable was unset (as `ip=::GW:MASK`
                // on the same line): no address, so DHCP, as for an empty `ip=` client.
                "netboot.ip" if v.is_empty() => {}
                "netboot.ip" => {
                    let ip = v.parse().map_err(|_| bad("IPv4 address"))?;
                    let keep = c.address.filter(|a| a.ip == ip);
                    c.address = Some(keep.unwrap_or(Address {
                        ip,
                        netmask: None,
                        gateway: None,
                        from: Origin::NetbootIp,
                    }));
                }
                "netboot.server" => c.server = Some(v.trim_end_matches('/').to_string()),
                "netboot.node" => c.node = Some(v.into()),
                "netboot.entity" => c.entity = Some(v.into()),
                "netboot.group" => c.group = Some(v.into()),
                "netboot.image" => c.image = Some(v.into()),
                "netboot.mode" => c.mode = v.into(),
                "netboot.target" => c.target = Some(v.into()),
                "netboot.upstream" => c.upstream = Some(v.into()),
                "netboot.image_id" => {
                    image_id(v).map_err(|_| bad("image id (64 lower-case hex digits)"))?;
                    c.image_id = Some(v.into())
                }
                "netboot.root" => {
                    c.root = Some(
                        v.parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad("partition number"))?,
                    )
                }
                "netboot.token" => {
                    c.backup.token =
                        Some(parse_token(v).ok_or_else(|| {
                            bad("upload token (16-128 letters, digits, `-`, `_`)")
                        })?)
                }
                "netboot.partitions" => {
                    c.backup.partitions = Some(parse_partitions(v).ok_or_else(|| {
                        bad("partition list (numbers 1-65535 joined by `,`, each once)")
                    })?)
                }
                "netboot.done" => {
                    c.on_done =
                        After::parse(v).ok_or_else(|| bad("action (reboot, poweroff, wait)"))?
                }
                "netboot.onerror" => {
                    c.on_error =
                        After::parse(v).ok_or_else(|| bad("action (reboot, poweroff, wait)"))?
                }
                "netboot.delta" => {
                    c.delta = Some(bootopts::parse_switch(v).ok_or_else(|| bad("switch (0 or 1)"))?)
                }
                "netboot.link_timeout" => {
                    c.link_timeout = v.parse().map_err(|_| bad("number of seconds"))?
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// Fills what the command line left open from the subnet's boot options.
    pub fn merge_bootopts(&mut self, b: &BootOpts) {
        if self.server.is_none() {
            self.server = b.get(bootopts::SERVER).map(str::to_string);
        }
        if self.entity.is_none() {
            self.entity = b.get(bootopts::ENTITY).map(str::to_string);
        }
        if let Some(mac) = &self.mac {
            if let Some((name, group)) = b.node_by_mac(mac) {
                if self.node.is_none() {
                    self.node = Some(name.to_string());
                }
                if self.group.is_none() {
                    self.group = Some(group.to_string());
                }
            }
        }
        if self.group.is_none() {
            self.group = b.get(bootopts::GROUP).map(str::to_string);
        }
        if self.image.is_none() && self.group.as_deref() == b.get(bootopts::GROUP) {
            self.image = b.get(bootopts::IMAGE).map(str::to_string);
        }
        if self.image_id.is_none() && self.group.as_deref() == b.get(bootopts::GROUP) {
            self.image_id = b.get(bootopts::IMAGE_ID).map(str::to_string);
        }
        if self.delta.is_none() {
            self.delta = b.delta();
        }
        if self.root.is_none() && self.group.as_deref() == b.get(bootopts::GROUP) {
            self.root = b
                .get(bootopts::ROOT)
                .and_then(|r| r.parse().ok())
                .filter(|n| *n > 0);
        }
        if self.mode == "discover" {
            if let Some(m) = b.get(bootopts::MODE) {
                self.mode = m.to_string();
            }
        }
        self.bootopts_subnet = b.get(bootopts::SUBNET).and_then(|s| parse_cidr(s).ok());
        self.bootopts_gateway = b.gateway();
    }

    /// Checks what the command line and the (network-fetched) bootopts resolved to, by
    /// the rules pxe-builder writes them with (docs/BOOT.md): node, entity, group and
    /// image names go into URLs, status posts and the console; the pin must be an id.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, what, v) in [
            (Kind::Node, "node", &self.node),
            (Kind::Entity, "entity", &self.entity),
            (Kind::Group, "group", &self.group),
            (Kind::Image, "image", &self.image),
        ] {
            if let Some(v) = v {
                name(kind, v).map_err(|(_, why)| ConfigError::BadName {
                    what,
                    value: v.clone(),
                    why,
                })?;
            }
        }
        // The mode is printed (console, the failed report) and compared: a word of
        // lower-case letters and `-` (`clone`, `discover`, `vsmp-diskless`, …).
        let m = &self.mode;
        if m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(ConfigError::BadName {
                what: "mode",
                value: m.clone(),
                why: "not a boot mode (1-32 lower-case letters and `-`)".into(),
            });
        }
        if let Some(id) = &self.image_id {
            image_id(id).map_err(|(_, why)| ConfigError::BadImageId {
                value: id.clone(),
                why,
            })?;
        }
        Ok(())
    }

    /// Delta re-clone on (the default) unless `netboot.delta=0` or the bootopts' `delta=0`.
    pub fn delta(&self) -> bool {
        self.delta.unwrap_or(true)
    }

    /// The image directory name: `netboot.image`, else the group's name.
    pub fn image_name(&self) -> Option<&str> {
        self.image.as_deref().or(self.group.as_deref())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_from_the_network_are_checked_before_use() {
        // A hostile bootopts: the image name would become a URL path, the node name a
        // status URL and console text. Before, both were used as they came.
        let mut c =
            Config::from_cmdline("netboot.server=http://s BOOTIF=01-52-54-00-00-00-01").unwrap();
        c.merge_bootopts(&BootOpts::parse("group=compute\nimage=../../etc\n"));
        let e = c.validate().unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadName { what: "image", value, .. } if value == "../../etc"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("image") && e.contains("../../etc"), "{e}");
        let mut c = Config::from_cmdline("netboot.node=n1 netboot.group=compute").unwrap();
        assert_eq!(c.validate(), Ok(()));
        c.node = Some("n1\u{1b}[2J".into());
        assert!(c.validate().unwrap_err().to_string().contains("node"));
        // A mode from the network's bootopts drives the console as it is printed.
        let mut c = Config::from_cmdline("netboot.group=compute").unwrap();
        c.merge_bootopts(&BootOpts::parse("mode=clone\u{1b}[2J\n"));
        let e = c.validate().unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadName { what: "mode", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("\\u{1b}"), "{e}");
    }

    use super::*;

    #[test]
    fn an_empty_address_variable_on_a_grub_line_means_dhcp() {
        // GRUB's ${net_default_ip} empty: both words carry nothing.
        let c = Config::from_cmdline(
            "netboot.server=http://s netboot.mac=52:54:00:00:00:07 netboot.ip= ip=::172.20.1.1:255.255.255.0",
        )
        .unwrap();
        assert_eq!(c.address, None);
        assert_eq!(c.mac.as_deref(), Some("52:54:00:00:00:07"));
    }

    #[test]
    fn pxelinux_command_line() {
        let c = Config::from_cmdline(
            "BOOT_IMAGE=boot/vmlinuz console=ttyS0 netboot.server=http://172.20.0.100:8080/ netboot.entity=rack1 netboot.group=compute netboot.mode=clone netboot.done=poweroff initrd=boot/initrd.img ip=172.20.0.9:172.20.0.2:0.0.0.0:255.255.255.0 BOOTIF=01-52-54-00-AA-bb-cc",
        )
        .unwrap();
        assert_eq!(c.server.as_deref(), Some("http://172.20.0.100:8080"));
        assert_eq!(c.mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        let a = c.address.unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(172, 20, 0, 9));
        assert_eq!(a.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(a.gateway, None);
        assert_eq!(c.on_done, After::Poweroff);
        assert_eq!(c.on_error, After::Wait);
    }

    #[test]
    fn grub_command_line_and_bootopts_fill_the_rest() {
        let mut c = Config::from_cmdline(
            "netboot.server=http://s netboot.mode=discover netboot.mac=52:54:00:00:00:07 netboot.ip=172.20.0.7",
        )
        .unwrap();
        let b = BootOpts::parse(
            "# x\nserver=http://other\nentity=rack1\nsubnet=172.20.0.0/27\ngroup=compute\nimage=compute-img\nmode=clone\nnode=52:54:00:00:00:07,172.20.0.7,n07,compute\n",
        );
        c.merge_bootopts(&b);
        assert_eq!(c.server.as_deref(), Some("http://s"), "command line wins");
        assert_eq!(c.node.as_deref(), Some("n07"));
        assert_eq!(c.group.as_deref(), Some("compute"));
        assert_eq!(c.image_name(), Some("compute-img"));
        assert_eq!(c.mode, "clone");
        // The subnet's mask and gateway are kept for the network step (ipconf), which
        // applies what the boot path left open; the command line's address is as given.
        assert_eq!(
            c.bootopts_subnet.map(|n| n.netmask()),
            Some(Ipv4Addr::new(255, 255, 255, 224))
        );
        assert_eq!(c.bootopts_gateway, None);
        assert_eq!(c.address.unwrap().netmask, None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_cmdline("BOOTIF=01-zz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOOTIF=01-zz"), "{e}");
        assert!(Config::from_cmdline("netboot.done=explode").is_err());
        let e = Config::from_cmdline("netboot.image_id=abc")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("netboot.image_id=abc") && e.contains("64"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_ip_word_is_named_with_its_value() {
        // The message the console shows (pid1 prints it and waits) is today's text.
        let e = Config::from_cmdline(
            "console=ttyS0 ip=172.20.0.999:1.2.3.4 BOOTIF=01-52-54-00-00-00-01",
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::BadWord {
                word: "ip=172.20.0.999:1.2.3.4".into(),
                what: "ip=client:server:gw:mask",
            }
        );
        assert_eq!(
            e.to_string(),
            "kernel command line: `ip=172.20.0.999:1.2.3.4` is not a valid ip=client:server:gw:mask"
        );
        let e = Config::from_cmdline("netboot.image_id=ABC").unwrap_err();
        assert!(
            matches!(e, ConfigError::BadWord { ref word, .. } if word == "netboot.image_id=ABC")
        );
        let c = Config {
            image_id: Some("ab".into()),
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadImageId { value, .. } if value == "ab"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("boot configuration: "), "{e}");
    }

    fn addr(cmdline: &str) -> Address {
        Config::from_cmdline(cmdline).unwrap().address.unwrap()
    }

    #[test]
    fn every_boot_paths_ip_form_is_read() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mask = Some(ip("255.255.255.0"));
        // pxelinux (IPAPPEND 1): client:server:gw:mask.
        let a = addr("ip=172.20.1.9:172.20.0.2:172.20.1.1:255.255.255.0");
        assert_eq!(
            a,
            Address {
                ip: ip("172.20.1.9"),
                netmask: mask,
                gateway: Some(ip("172.20.1.1")),
                from: Origin::IpArg,
            }
        );
        // GRUB and iPXE (pxe-builder): the server field empty.
        assert_eq!(addr("ip=172.20.1.9::172.20.1.1:255.255.255.0"), a);
        // A prefix length for the mask.
        assert_eq!(addr("ip=172.20.1.9::172.20.1.1:24"), a);
        // No gateway: 0.0.0.0 (pxelinux when DHCP gave none) or empty.
        for w in [
            "ip=172.20.0.9::0.0.0.0:255.255.255.0",
            "ip=172.20.0.9:::255.255.255.0",
            "ip=172.20.0.9:172.20.0.2:0.0.0.0:255.255.255.0:node9:eth0:off",
        ] {
            let a = addr(w);
            assert_eq!(
                (a.ip, a.netmask, a.gateway),
                (ip("172.20.0.9"), mask, None),
                "{w}"
            );
        }
        // No mask (empty, 0.0.0.0, or no field): the address alone, for DHCP to complete.
        for w in [
            "ip=172.20.0.9::172.20.0.1:",
            "ip=172.20.0.9::172.20.0.1:0.0.0.0",
            "ip=172.20.0.9",
        ] {
            assert_eq!(addr(w).netmask, None, "{w}");
        }
        // netboot.ip= alone says where it came from, and no mask.
        let a = addr("netboot.ip=172.20.1.9");
        assert_eq!(
            (a.from, a.netmask, a.gateway),
            (Origin::NetbootIp, None, None)
        );
        // The kernel's own autoconfiguration words mean: no address here.
        for w in [
            "ip=dhcp",
            "ip=off",
            "ip=on",
            "ip=",
            "ip=::172.20.1.1:255.255.255.0",
        ] {
            assert_eq!(Config::from_cmdline(w).unwrap().address, None, "{w}");
        }
    }

    #[test]
    fn bad_masks_and_gateways_in_ip_are_named() {
        for (w, part) in [
            ("ip=172.20.1.9::172.20.1.1:255.0.255.0", "mask"),
            ("ip=172.20.1.9::172.20.1.1:255.255.255.256", "mask"),
            ("ip=172.20.1.9::172.20.1.1:33", "mask"),
            ("ip=172.20.1.9::172.20.1.1:0", "mask"),
            ("ip=172.20.1.9::172.20.1.1:/24", "mask"),
            ("ip=172.20.1.9::router:24", "gw"),
            ("ip=0.0.0.0::172.20.1.1:24", "client"),
            ("ip=node9", "client"),
        ] {
            let e = Config::from_cmdline(w).unwrap_err();
            assert!(
                matches!(&e, ConfigError::BadWord { word, .. } if word == w),
                "{w}: {e:?}"
            );
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("`{w}`")) && shown.contains(part),
                "{shown}"
            );
        }
        assert_eq!(
            parse_netmask("255.255.255.252"),
            Ok(Some(Ipv4Addr::new(255, 255, 255, 252)))
        );
        assert_eq!(parse_netmask("32"), Ok(Some(Ipv4Addr::BROADCAST)));
        assert_eq!(parse_netmask("1"), Ok(Some(Ipv4Addr::new(128, 0, 0, 0))));
        assert_eq!(parse_netmask("0.0.0.0"), Ok(None));
    }

    #[test]
    fn bootopts_subnet_and_gateway_are_kept_for_the_network_step() {
        let mut c = Config::from_cmdline("netboot.ip=172.20.1.9").unwrap();
        c.merge_bootopts(&BootOpts::parse(
            "subnet=172.20.1.0/24\ngateway=172.20.1.1\n",
        ));
        assert_eq!(
            c.bootopts_subnet.map(|n| n.to_string()),
            Some("172.20.1.0/24".into())
        );
        assert_eq!(c.bootopts_gateway, Some(Ipv4Addr::new(172, 20, 1, 1)));
        // Malformed values are not taken.
        let mut c = Config::default();
        c.merge_bootopts(&BootOpts::parse("subnet=172.20.1.9/24\ngateway=router\n"));
        assert_eq!((c.bootopts_subnet, c.bootopts_gateway), (None, None));
    }

    #[test]
    fn delta_is_on_unless_the_command_line_or_the_bootopts_say_0() {
        assert!(Config::from_cmdline("netboot.group=compute")
            .unwrap()
            .delta());
        assert!(!Config::from_cmdline("netboot.delta=0").unwrap().delta());
        // The subnet's bootopts fill it when the command line is silent...
        let mut c = Config::from_cmdline("netboot.group=compute").unwrap();
        c.merge_bootopts(&BootOpts::parse("delta=0\n"));
        assert!(!c.delta());
        // ...and the command line wins.
        let mut c = Config::from_cmdline("netboot.delta=1").unwrap();
        c.merge_bootopts(&BootOpts::parse("delta=0\n"));
        assert!(c.delta());
        let e = Config::from_cmdline("netboot.delta=sometimes").unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadWord { word, .. } if word == "netboot.delta=sometimes"),
            "{e:?}"
        );
    }

    #[test]
    fn a_diskless_root_from_the_command_line_or_the_groups_bootopts() {
        let c = Config::from_cmdline("netboot.mode=diskless netboot.root=4").unwrap();
        assert_eq!((c.mode.as_str(), c.root), ("diskless", Some(4)));
        for w in ["netboot.root=0", "netboot.root=p4", "netboot.root=-1"] {
            let e = Config::from_cmdline(w).unwrap_err().to_string();
            assert!(e.contains("partition number"), "{e}");
        }
        let mut c = Config::from_cmdline("netboot.group=ram").unwrap();
        c.merge_bootopts(&BootOpts::parse("group=ram\nmode=diskless\nroot=2\n"));
        assert_eq!((c.mode.as_str(), c.root), ("diskless", Some(2)));
        // Another group's root is not ours.
        let mut c = Config::from_cmdline("netboot.group=gpu").unwrap();
        c.merge_bootopts(&BootOpts::parse("group=ram\nroot=2\n"));
        assert_eq!(c.root, None);
    }

    #[test]
    fn image_id_pin_from_the_command_line_or_the_groups_bootopts() {
        let id = "ab".repeat(32);
        let c = Config::from_cmdline(&format!("netboot.image_id={id}")).unwrap();
        assert_eq!(c.image_id.as_deref(), Some(id.as_str()));
        let mut c = Config::from_cmdline("netboot.group=compute").unwrap();
        c.merge_bootopts(&BootOpts::parse(&format!("group=compute\nimage_id={id}\n")));
        assert_eq!(c.image_id.as_deref(), Some(id.as_str()));
        // Another group's pin is not ours.
        let mut c = Config::from_cmdline("netboot.group=gpu").unwrap();
        c.merge_bootopts(&BootOpts::parse(&format!("group=compute\nimage_id={id}\n")));
        assert_eq!(c.image_id, None);
    }

    #[test]
    fn backup_keys_are_read_and_bad_ones_named() {
        let tok = "Ab3-_x".repeat(4);
        let c = Config::from_cmdline(&format!(
            "netboot.mode=backup netboot.group=compute netboot.token={tok} netboot.partitions=1,2,4"
        ))
        .unwrap();
        assert_eq!(c.mode, "backup");
        assert_eq!(c.backup.token.as_deref(), Some(tok.as_str()));
        assert_eq!(c.backup.partitions, Some(vec![1, 2, 4]));
        assert_eq!(c.validate(), Ok(()));
        for w in [
            "netboot.token=short",
            "netboot.token=has/slash/in/it/0123",
            "netboot.token=percent%0123456789abcdef",
            "netboot.token=dotted.0123456789abcdef",
            &format!("netboot.token={}", "a".repeat(MAX_TOKEN + 1)),
            "netboot.partitions=",
            "netboot.partitions=0",
            "netboot.partitions=1,1",
            "netboot.partitions=1,,2",
            "netboot.partitions=65536",
            "netboot.partitions=-1",
            &format!(
                "netboot.partitions={}",
                (1..=MAX_PARTITIONS as u32 + 1)
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ] {
            let e = Config::from_cmdline(w).unwrap_err();
            assert!(
                matches!(&e, ConfigError::BadWord { word, .. } if word == w),
                "{w}: {e:?}"
            );
        }
        // No token in a subnet's bootopts is taken: every client may read that file.
        let mut c = Config::from_cmdline("netboot.mode=backup").unwrap();
        c.merge_bootopts(&BootOpts::parse("token=0123456789abcdef0123\n"));
        assert_eq!(c.backup, BackupKeys::default());
    }
}

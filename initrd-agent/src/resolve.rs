//! Completing the boot configuration from the network: the command line gave the image
//! server and our address; the subnet's boot options (`etc/bootopts/<HEX>`, by the
//! longest hex prefix of our address that the server has — the rule pxelinux used to pick
//! our boot file) fill in the rest ([`crate::config::Config::merge_bootopts`]). What came
//! over the network is checked ([`crate::config::Config::validate`]) before anything uses
//! it. The fetch is a parameter, so the order and the fallbacks are tested without one.

use crate::config::Config;
use crate::report::Reporter;
use std::net::Ipv4Addr;
use std::time::Duration;

/// One boot-options fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Text(String),
    /// 404: try the next shorter prefix.
    Missing,
    /// Anything else: stop looking, go on with the command line only.
    Failed(String),
}

/// The boot-options URLs to try for `ip`, longest hex prefix first.
pub fn bootopts_urls(server: &str, ip: Ipv4Addr) -> Vec<String> {
    netboot_proto::hex::hex_prefixes(ip)
        .into_iter()
        .map(|h| format!("{server}/{}/{h}", netboot_proto::bootopts::DIR))
        .collect()
}

/// Completes `cfg` from the subnet's bootopts (fetched over HTTP) and checks it.
pub fn resolve(cfg: &mut Config, rep: &Reporter) -> anyhow::Result<()> {
    resolve_with(cfg, rep, http_get)
}

/// [`resolve`] with `fetch` for the HTTP GET.
pub fn resolve_with(
    cfg: &mut Config,
    rep: &Reporter,
    mut fetch: impl FnMut(&str) -> Fetched,
) -> anyhow::Result<()> {
    let server = cfg
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no netboot.server on the kernel command line: the boot entry must name the image server"))?;
    if let Some(a) = cfg.address {
        for url in bootopts_urls(&server, a.ip) {
            match fetch(&url) {
                Fetched::Text(text) => {
                    cfg.merge_bootopts(&netboot_proto::bootopts::BootOpts::parse(&text));
                    rep.say(&format!("boot options: {url}"));
                    break;
                }
                Fetched::Missing => continue,
                Fetched::Failed(e) => {
                    rep.say(&format!(
                        "boot options unavailable ({e}); using the command line only"
                    ));
                    break;
                }
            }
        }
    }
    // Bootopts came over the network: nothing of it is used before it is checked.
    cfg.validate()?;
    rep.say(&format!(
        "node {} entity {} group {} image {} mode {}",
        cfg.node.as_deref().unwrap_or("?"),
        cfg.entity.as_deref().unwrap_or("?"),
        cfg.group.as_deref().unwrap_or("?"),
        cfg.image_name().unwrap_or("?"),
        cfg.mode
    ));
    Ok(())
}

fn http_get(url: &str) -> Fetched {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        // A body that cannot be read (cut, not UTF-8, over ureq's cap) is no boot options.
        Ok(r) => match r.into_string() {
            Ok(text) => Fetched::Text(text),
            Err(e) => Fetched::Failed(format!("{url}: reading the body: {e}")),
        },
        Err(ureq::Error::Status(404, _)) => Fetched::Missing,
        Err(e) => Fetched::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Address, Origin};

    fn cfg() -> Config {
        Config {
            server: Some("http://s".into()),
            mac: Some("52:54:00:00:00:01".into()),
            address: Some(Address {
                ip: Ipv4Addr::new(172, 20, 0, 5),
                netmask: None,
                gateway: None,
                from: Origin::NetbootIp,
            }),
            ..Config::default()
        }
    }

    #[test]
    fn the_longest_prefix_the_server_has_wins() {
        assert_eq!(
            bootopts_urls("http://s", Ipv4Addr::new(172, 20, 0, 5))[..2],
            [
                "http://s/etc/bootopts/AC140005",
                "http://s/etc/bootopts/AC14000"
            ]
        );
        let mut c = cfg();
        let mut asked = vec![];
        let rep = Reporter::new(None, String::new());
        resolve_with(&mut c, &rep, |url| {
            asked.push(url.to_string());
            if url.ends_with("/AC14") {
                Fetched::Text("group=compute\nnode=52:54:00:00:00:01,172.20.0.5,n5,compute\nsubnet=172.20.0.0/16\n".into())
            } else {
                Fetched::Missing
            }
        })
        .unwrap();
        assert_eq!(asked.len(), 5, "{asked:?}");
        assert_eq!(c.node.as_deref(), Some("n5"));
        assert_eq!(c.group.as_deref(), Some("compute"));
        assert_eq!(
            c.bootopts_subnet.map(|n| n.netmask()),
            Some(Ipv4Addr::new(255, 255, 0, 0))
        );
    }

    #[test]
    fn a_failing_server_leaves_the_command_line_and_names_still_checked() {
        let mut c = cfg();
        let rep = Reporter::new(None, String::new());
        let mut n = 0;
        resolve_with(&mut c, &rep, |_| {
            n += 1;
            Fetched::Failed("connection refused".into())
        })
        .unwrap();
        assert_eq!((n, c.node.clone()), (1, None));
        // A bad name from the network stops here, named.
        let mut c = cfg();
        let e = resolve_with(&mut c, &rep, |_| Fetched::Text("group=a b\n".into())).unwrap_err();
        assert!(e.to_string().contains("group"), "{e}");
        let mut c = Config::default();
        let e = resolve_with(&mut c, &rep, |_| Fetched::Missing).unwrap_err();
        assert!(e.to_string().contains("no netboot.server"), "{e}");
    }
}

//! The `kp` CLI: parsing command lines into control-plane [`Change`]s
//! (and the interface and `show` requests), independent of VPP. The VPP
//! glue (`crate::vpp::cli`) only hands over the text after the command
//! path and prints what comes back.
//!
//! Grammar (keywords in any order after the prefix, as VPP commands do):
//!
//! ```text
//! kp conf [buckets <n>] [timeout <s>]
//! kp vip <prefix> [protocol tcp|udp] port <n> target_port <n> [node_port <n>]
//!        [nat44|nat46|nat64|nat66|nat4|nat6] [new_len <n>] [del]
//! kp pod <vip-prefix> [protocol tcp|udp] [port <n>] <address> [weight <w>]
//!        [<address> [weight <w>]]... [del [flush]]
//! kp set interface nat4|nat6 in <interface> [del]
//! show kp
//! show kp vip [<prefix>] [verbose]
//! ```

use crate::config::{FlowChange, IpPrefix, PodTarget, Protocol, VipKey, VipSpec, XlatChange};
use crate::control::Change;
use crate::nat::NatType;
use crate::packet::IpFamily;
use crate::xlat::Rfc6052Prefix;
use std::net::IpAddr;

pub const CONF_HELP: &str = "kp conf [buckets <n>] [timeout <s>]";
pub const VIP_HELP: &str = "kp vip <prefix> [protocol tcp|udp] port <n> target_port <n> [node_port <n>] \
                            [nat44|nat46|nat64|nat66] [new_len <n>] [del]";
pub const POD_HELP: &str =
    "kp pod <vip-prefix> [protocol tcp|udp] [port <n>] <address> [weight <w>] [<address> [weight <w>]]... [del [flush]]";
pub const SET_INTERFACE_HELP: &str = "kp set interface nat4|nat6 in <interface> [del]";
pub const SHOW_HELP: &str = "show kp [vip [<prefix>] [verbose]]";

/// A NAT type as typed: explicit, or the seed's pod-family shorthand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatChoice {
    Exact(NatType),
    /// `nat4` / `nat6`: pods of this family.
    PodFamily(IpFamily),
}

/// `kp set interface nat4|nat6 in <interface> [del]`: resolved by the
/// VPP glue (it names an interface), so not a control-plane [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInterface {
    pub family: IpFamily,
    pub interface: String,
    pub enable: bool,
}

/// What a `show kp` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Show {
    Kp,
    Vips { prefix: Option<IpPrefix>, verbose: bool },
}

/// Token stream over one command line.
struct Tokens<'a> {
    toks: Vec<&'a str>,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a str) -> Self {
        Tokens { toks: line.split_whitespace().collect(), at: 0 }
    }
    fn next(&mut self) -> Option<&'a str> {
        let t = self.toks.get(self.at).copied();
        self.at += usize::from(t.is_some());
        t
    }
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.at).copied()
    }
    fn value(&mut self, keyword: &str) -> Result<&'a str, String> {
        self.next().ok_or_else(|| format!("{keyword} needs a value"))
    }
}

fn number<T: TryFrom<u64>>(keyword: &str, s: &str, max: u64) -> Result<T, String> {
    let v: u64 = s.parse().map_err(|_| format!("{keyword} '{s}' is not a number"))?;
    if v > max {
        return Err(format!("{keyword} {v} is out of range (at most {max})"));
    }
    T::try_from(v).map_err(|_| format!("{keyword} {v} is out of range"))
}

fn port(keyword: &str, s: &str) -> Result<u16, String> {
    let p: u16 = number(keyword, s, 65535)?;
    if p == 0 {
        return Err(format!("{keyword} must be from 1 to 65535"));
    }
    Ok(p)
}

fn set_once<T>(slot: &mut Option<T>, keyword: &str, v: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{keyword} given twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn prefix(s: Option<&str>, what: &str) -> Result<IpPrefix, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse::<IpPrefix>().map_err(|e| e.to_string())
}

fn protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!("protocol '{other}' is not tcp or udp")),
    }
}

/// `kp conf ...` (also the body of the startup.conf `kp { }` section):
/// the buckets and timeout to set (at least one of them).
pub fn parse_conf(args: &str) -> Result<FlowChange, String> {
    let c = parse_conf_all(args)?;
    if c.reject.is_some() || c.xlat != XlatChange::default() {
        return Err("reject, nat46 and nat64 are run-time settings (kp conf), not startup ones".into());
    }
    Ok(c.flow())
}

/// What `kp conf` sets; each part if given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfArgs {
    pub buckets: Option<u32>,
    pub timeout: Option<u32>,
    pub embryonic: Option<u32>,
    pub reject: Option<bool>,
    pub xlat: XlatChange,
}

impl ConfArgs {
    /// The flow-table part.
    pub fn flow(&self) -> FlowChange {
        FlowChange { buckets: self.buckets, timeout: self.timeout, embryonic: self.embryonic }
    }
}

/// `kp conf [buckets <n>] [timeout <s>] [embryonic-timeout <s>] [reject on|off]
/// [nat46 prefix <ip6-prefix>] [nat64 source <ip4>[,<ip4>...]|none]
/// [nat64 ports <first>-<last>]`.
pub fn parse_conf_all(args: &str) -> Result<ConfArgs, String> {
    let mut t = Tokens::new(args);
    let mut c = ConfArgs::default();
    while let Some(tok) = t.next() {
        match tok {
            "reject" => {
                let on = match t.value(tok)? {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("reject takes on or off, not '{other}'")),
                };
                set_once(&mut c.reject, tok, on)?
            }
            "buckets" => set_once(&mut c.buckets, tok, number(tok, t.value(tok)?, u64::from(u32::MAX))?)?,
            "timeout" => set_once(&mut c.timeout, tok, number(tok, t.value(tok)?, u64::from(u32::MAX))?)?,
            "embryonic-timeout" => {
                set_once(&mut c.embryonic, tok, number(tok, t.value(tok)?, u64::from(u32::MAX))?)?
            }
            "nat46" => match t.next() {
                Some("prefix") => {
                    let p = nat46_prefix(t.value("nat46 prefix")?)?;
                    set_once(&mut c.xlat.nat46_prefix, "nat46 prefix", p)?
                }
                other => {
                    return Err(format!("nat46 takes prefix <ip6-prefix>, not '{}'", other.unwrap_or("")))
                }
            },
            "nat64" => match t.next() {
                Some("source") => {
                    let v = t.value("nat64 source")?;
                    let list = if v == "none" {
                        Vec::new()
                    } else {
                        v.split(',')
                            .map(|a| {
                                a.parse().map_err(|_| format!("nat64 source '{a}' is not an IPv4 address"))
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    };
                    set_once(&mut c.xlat.nat64_sources, "nat64 source", list)?
                }
                Some("ports") => {
                    let v = t.value("nat64 ports")?;
                    let (lo, hi) =
                        v.split_once('-').ok_or_else(|| format!("nat64 ports '{v}': give <first>-<last>"))?;
                    let range = (port("nat64 ports", lo)?, port("nat64 ports", hi)?);
                    set_once(&mut c.xlat.nat64_ports, "nat64 ports", range)?
                }
                other => {
                    return Err(format!(
                        "nat64 takes source <ip4>[,<ip4>...] or ports <first>-<last>, not '{}'",
                        other.unwrap_or("")
                    ))
                }
            },
            other => return Err(format!("unknown input '{other}'")),
        }
    }
    if c == ConfArgs::default() {
        return Err("nothing to set: give buckets, timeout, embryonic-timeout, reject, nat46 or nat64".into());
    }
    Ok(c)
}

/// An RFC 6052 prefix for nat46.
fn nat46_prefix(s: &str) -> Result<Rfc6052Prefix, String> {
    let p = prefix(Some(s), "nat46 prefix")?;
    let IpAddr::V6(a) = p.addr() else { return Err(format!("nat46 prefix {s} is not an IPv6 prefix")) };
    Rfc6052Prefix::new(a, p.prefix_len()).map_err(|e| format!("nat46 prefix {s}: {e}"))
}

/// `kp vip ...`
pub fn parse_vip(args: &str) -> Result<Change, String> {
    let mut t = Tokens::new(args);
    let prefix = prefix(t.next(), "VIP prefix")?;
    let (mut proto, mut vport, mut target, mut node_port, mut nat, mut new_len) =
        (None, None, None, None, None, None);
    let mut del = false;
    while let Some(tok) = t.next() {
        match tok {
            "protocol" => set_once(&mut proto, tok, protocol(t.value(tok)?)?)?,
            "port" => set_once(&mut vport, tok, port(tok, t.value(tok)?)?)?,
            "target_port" => set_once(&mut target, tok, port(tok, t.value(tok)?)?)?,
            "node_port" => set_once(&mut node_port, tok, port(tok, t.value(tok)?)?)?,
            "new_len" => set_once(&mut new_len, tok, number(tok, t.value(tok)?, u64::from(u32::MAX))?)?,
            "nat44" => set_once(&mut nat, "NAT type", NatChoice::Exact(NatType::Nat44))?,
            "nat46" => set_once(&mut nat, "NAT type", NatChoice::Exact(NatType::Nat46))?,
            "nat64" => set_once(&mut nat, "NAT type", NatChoice::Exact(NatType::Nat64))?,
            "nat66" => set_once(&mut nat, "NAT type", NatChoice::Exact(NatType::Nat66))?,
            "nat4" => set_once(&mut nat, "NAT type", NatChoice::PodFamily(IpFamily::V4))?,
            "nat6" => set_once(&mut nat, "NAT type", NatChoice::PodFamily(IpFamily::V6))?,
            "del" if !del => del = true,
            "del" => return Err("del given twice".into()),
            other => return Err(format!("unknown input '{other}'")),
        }
    }
    let port = vport.ok_or("missing port <n>")?;
    let key = VipKey { prefix, protocol: proto.unwrap_or(Protocol::Any), port };
    if del {
        return Ok(Change::DelVip(key));
    }
    let target_port = target.ok_or("missing target_port <n>")?;
    let nat = nat.map(|c| match c {
        NatChoice::Exact(n) => n,
        NatChoice::PodFamily(pods) => NatType::between(prefix.family(), pods),
    });
    Ok(Change::AddVip(VipSpec { key, target_port, node_port: node_port.unwrap_or(0), nat, new_len }))
}

/// `kp pod ...`
pub fn parse_pod(args: &str) -> Result<Change, String> {
    let mut t = Tokens::new(args);
    let prefix = prefix(t.next(), "VIP prefix")?;
    let (mut proto, mut vport) = (None, None);
    let mut pods: Vec<(IpAddr, u32)> = Vec::new();
    let (mut del, mut flush) = (false, false);
    while let Some(tok) = t.next() {
        match tok {
            "protocol" => set_once(&mut proto, tok, protocol(t.value(tok)?)?)?,
            "port" => set_once(&mut vport, tok, port(tok, t.value(tok)?)?)?,
            "weight" => {
                let w = number(tok, t.value(tok)?, u64::from(crate::maglev::MAX_WEIGHT))?;
                match pods.last_mut() {
                    Some((_, weight)) if *weight == u32::MAX => *weight = w,
                    Some(_) => return Err("weight given twice for one pod".into()),
                    None => return Err("weight must follow a pod address".into()),
                }
            }
            "del" if !del => del = true,
            "del" => return Err("del given twice".into()),
            "flush" if del && !flush => flush = true,
            "flush" if !del => return Err("flush is only valid after del".into()),
            other => match other.parse::<IpAddr>() {
                Ok(a) if !del => {
                    if pods.iter().any(|(p, _)| *p == a) {
                        return Err(format!("pod {a} given twice"));
                    }
                    // u32::MAX marks "no weight given yet".
                    pods.push((a, u32::MAX));
                }
                Ok(_) => return Err("pod addresses must come before del".into()),
                Err(_) => return Err(format!("unknown input '{other}'")),
            },
        }
    }
    if pods.is_empty() {
        return Err("no pod address given".into());
    }
    let target = PodTarget { prefix, protocol: proto, port: vport };
    if del {
        if pods.iter().any(|&(_, w)| w != u32::MAX) {
            return Err("weight is not valid with del".into());
        }
        return Ok(Change::DelPods { target, pods: pods.into_iter().map(|(a, _)| a).collect(), flush });
    }
    let pods = pods.into_iter().map(|(a, w)| (a, if w == u32::MAX { 1 } else { w })).collect();
    Ok(Change::AddPods { target, pods })
}

/// `kp set interface ...` (the text after `kp set interface`).
pub fn parse_set_interface(args: &str) -> Result<SetInterface, String> {
    let mut t = Tokens::new(args);
    let family = match t.next() {
        Some("nat4") => IpFamily::V4,
        Some("nat6") => IpFamily::V6,
        Some(other) => return Err(format!("'{other}' is not nat4 or nat6")),
        None => return Err("missing nat4|nat6".into()),
    };
    match t.next() {
        Some("in") => {}
        Some(other) => return Err(format!("expected 'in', got '{other}'")),
        None => return Err("missing in <interface>".into()),
    }
    let interface = t.next().ok_or("missing interface name")?.to_string();
    let enable = match t.next() {
        None => true,
        Some("del") if t.peek().is_none() => false,
        Some(other) => return Err(format!("unknown input '{other}'")),
    };
    Ok(SetInterface { family, interface, enable })
}

/// `show kp vip ...`
pub fn parse_show_vip(args: &str) -> Result<Show, String> {
    let mut t = Tokens::new(args);
    let (mut prefix, mut verbose) = (None, false);
    while let Some(tok) = t.next() {
        match tok {
            "verbose" if !verbose => verbose = true,
            other if prefix.is_none() && other != "verbose" => {
                prefix = Some(other.parse::<IpPrefix>().map_err(|e| e.to_string())?)
            }
            other => return Err(format!("unknown input '{other}'")),
        }
    }
    Ok(Show::Vips { prefix, verbose })
}

/// `show kp [vip ...]`. One VPP command serves both: VPP runs a parent
/// command's handler when a sub-command's handler fails, which would hide
/// `show kp vip` errors behind `show kp` output.
pub fn parse_show(args: &str) -> Result<Show, String> {
    let mut t = Tokens::new(args);
    match t.next() {
        None => Ok(Show::Kp),
        Some("vip") => parse_show_vip(args.trim_start().strip_prefix("vip").unwrap_or("")),
        Some(other) => Err(format!("unknown input '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn vip_forms() {
        let Change::AddVip(s) = parse_vip("10.96.0.10/32 port 80 target_port 8080").unwrap() else {
            panic!()
        };
        assert_eq!(s.key.protocol, Protocol::Any);
        assert_eq!((s.key.port, s.target_port, s.node_port, s.nat, s.new_len), (80, 8080, 0, None, None));
        let Change::AddVip(s) = parse_vip(
            "2001:db8::/120 protocol udp new_len 4099 port 53 target_port 5353 node_port 30053 nat4",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.key.protocol, s.nat, s.new_len, s.node_port),
            (Protocol::Udp, Some(NatType::Nat64), Some(4099), 30053)
        );
        let Change::AddVip(s) = parse_vip("10.0.0.1/32 port 1 target_port 2 nat4").unwrap() else { panic!() };
        assert_eq!(s.nat, Some(NatType::Nat44));
        assert_eq!(
            parse_vip("10.0.0.1/32 protocol tcp port 80 del").unwrap(),
            Change::DelVip(VipKey {
                prefix: "10.0.0.1/32".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80
            })
        );
    }

    #[test]
    fn pod_forms() {
        let Change::AddPods { target, pods } =
            parse_pod("10.96.0.10/32 port 80 10.1.0.1 weight 3 10.1.0.2 10.1.0.3 weight 0").unwrap()
        else {
            panic!()
        };
        assert_eq!((target.port, target.protocol), (Some(80), None));
        assert_eq!(pods, vec![(ip("10.1.0.1"), 3), (ip("10.1.0.2"), 1), (ip("10.1.0.3"), 0)]);
        assert_eq!(
            parse_pod("10.96.0.10/32 10.1.0.1 10.1.0.2 del flush").unwrap(),
            Change::DelPods {
                target: PodTarget { prefix: "10.96.0.10/32".parse().unwrap(), protocol: None, port: None },
                pods: vec![ip("10.1.0.1"), ip("10.1.0.2")],
                flush: true
            }
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            parse_conf("buckets 1024 timeout 30").unwrap(),
            FlowChange { buckets: Some(1024), timeout: Some(30), embryonic: None }
        );
        assert_eq!(parse_conf("embryonic-timeout 3").unwrap().embryonic, Some(3));
        assert_eq!(
            parse_conf_all("reject off").unwrap(),
            ConfArgs { reject: Some(false), ..Default::default() }
        );
        assert_eq!(
            parse_conf_all("timeout 5 reject on").unwrap(),
            ConfArgs { timeout: Some(5), reject: Some(true), ..Default::default() }
        );
        let x = parse_conf_all(
            "nat46 prefix 2001:db8:46::/96 nat64 source 192.0.2.1,192.0.2.2 nat64 ports 2000-2999",
        )
        .unwrap()
        .xlat;
        assert_eq!(x.nat46_prefix.unwrap().to_string(), "2001:db8:46::/96");
        let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        assert_eq!(x.nat64_sources.unwrap(), vec![v4("192.0.2.1"), v4("192.0.2.2")]);
        assert_eq!(x.nat64_ports, Some((2000, 2999)));
        assert_eq!(parse_conf_all("nat64 source none").unwrap().xlat.nat64_sources, Some(vec![]));
        assert_eq!(
            parse_set_interface("nat6 in pg1 del").unwrap(),
            SetInterface { family: IpFamily::V6, interface: "pg1".into(), enable: false }
        );
        assert_eq!(parse_show("").unwrap(), Show::Kp);
        assert_eq!(parse_show(" vip verbose").unwrap(), Show::Vips { prefix: None, verbose: true });
        assert_eq!(
            parse_show_vip("verbose 10.0.0.0/8").unwrap(),
            Show::Vips { prefix: Some("10.0.0.0/8".parse().unwrap()), verbose: true }
        );
    }

    /// Each malformed line gets one clear error naming the problem.
    #[test]
    fn malformed_lines_name_their_problem() {
        type Parser = fn(&str) -> Result<(), String>;
        let cases: &[(Parser, &str, &str)] = &[
            (|l| parse_vip(l).map(drop), "", "missing VIP prefix"),
            (
                |l| parse_vip(l).map(drop),
                "10.0.0.1/33 port 1 target_port 1",
                "prefix length 33 is out of range (0 to 32)",
            ),
            (
                |l| parse_vip(l).map(drop),
                "10.0.0.300/32 port 1 target_port 1",
                "'10.0.0.300/32' is not an IPv4 or IPv6 prefix",
            ),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port 0 target_port 1", "port must be from 1 to 65535"),
            (
                |l| parse_vip(l).map(drop),
                "10.0.0.1/32 port 65536 target_port 1",
                "port 65536 is out of range (at most 65535)",
            ),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port x target_port 1", "port 'x' is not a number"),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port 1", "missing target_port <n>"),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 target_port 1", "missing port <n>"),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port 1 target_port 1 port 2", "port given twice"),
            (
                |l| parse_vip(l).map(drop),
                "10.0.0.1/32 port 1 target_port 1 nat44 nat66",
                "NAT type given twice",
            ),
            (
                |l| parse_vip(l).map(drop),
                "10.0.0.1/32 port 1 target_port 1 protocol sctp",
                "protocol 'sctp' is not tcp or udp",
            ),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port 1 target_port 1 bogus", "unknown input 'bogus'"),
            (|l| parse_vip(l).map(drop), "10.0.0.1/32 port 1 target_port", "target_port needs a value"),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32", "no pod address given"),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32 weight 2 10.1.0.1", "weight must follow a pod address"),
            (
                |l| parse_pod(l).map(drop),
                "10.0.0.1/32 10.1.0.1 weight 2 weight 3",
                "weight given twice for one pod",
            ),
            (
                |l| parse_pod(l).map(drop),
                "10.0.0.1/32 10.1.0.1 weight 1000001",
                "weight 1000001 is out of range (at most 1000000)",
            ),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32 10.1.0.1 10.1.0.1", "pod 10.1.0.1 given twice"),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32 10.1.0.1 flush", "flush is only valid after del"),
            (
                |l| parse_pod(l).map(drop),
                "10.0.0.1/32 10.1.0.1 del 10.1.0.2",
                "pod addresses must come before del",
            ),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32 10.1.0.1 weight 2 del", "weight is not valid with del"),
            (|l| parse_pod(l).map(drop), "10.0.0.1/32 10.1.0.x", "unknown input '10.1.0.x'"),
            (
                |l| parse_conf(l).map(drop),
                "",
                "nothing to set: give buckets, timeout, embryonic-timeout, reject, nat46 or nat64",
            ),
            (|l| parse_conf_all(l).map(drop), "reject maybe", "reject takes on or off, not 'maybe'"),
            (|l| parse_conf_all(l).map(drop), "reject on reject off", "reject given twice"),
            (
                |l| parse_conf_all(l).map(drop),
                "nat46 prefix 2001:db8::/80",
                "nat46 prefix 2001:db8::/80: an RFC 6052 prefix is a /32, /40, /48, /56, /64 or /96, not a /80",
            ),
            (|l| parse_conf_all(l).map(drop), "nat46 prefix 192.0.2.0/24", "nat46 prefix 192.0.2.0/24 is not an IPv6 prefix"),
            (|l| parse_conf_all(l).map(drop), "nat64 source 2001:db8::1", "nat64 source '2001:db8::1' is not an IPv4 address"),
            (|l| parse_conf_all(l).map(drop), "nat64 ports 5", "nat64 ports '5': give <first>-<last>"),
            (|l| parse_conf_all(l).map(drop), "nat64 pool 1", "nat64 takes source <ip4>[,<ip4>...] or ports <first>-<last>, not 'pool'"),
            (|l| parse_conf(l).map(drop), "buckets", "buckets needs a value"),
            (|l| parse_conf(l).map(drop), "buckets -1", "buckets '-1' is not a number"),
            (|l| parse_conf(l).map(drop), "timeout 5 extra", "unknown input 'extra'"),
            (|l| parse_set_interface(l).map(drop), "nat5 in pg0", "'nat5' is not nat4 or nat6"),
            (|l| parse_set_interface(l).map(drop), "nat4 pg0", "expected 'in', got 'pg0'"),
            (|l| parse_set_interface(l).map(drop), "nat4 in", "missing interface name"),
            (|l| parse_set_interface(l).map(drop), "nat4 in pg0 del x", "unknown input 'del'"),
            (|l| parse_show(l).map(drop), "extra", "unknown input 'extra'"),
            (|l| parse_show_vip(l).map(drop), "verbose verbose", "unknown input 'verbose'"),
            (|l| parse_show(l).map(drop), "vip verbose verbose", "unknown input 'verbose'"),
            (|l| parse_show(l).map(drop), "vipverbose", "unknown input 'vipverbose'"),
        ];
        for (parse, line, want) in cases {
            assert_eq!(parse(line).unwrap_err(), *want, "line: {line:?}");
        }
    }
}

//! The service configuration model and its validation.
//!
//! This is what the CLI and the binary API change, through one validation
//! path: every operation either applies completely or returns an error and
//! leaves the configuration exactly as it was.

use crate::flowtable::{
    DEFAULT_BUCKETS, DEFAULT_EMBRYONIC_TIMEOUT, DEFAULT_TIMEOUT, MAX_BUCKETS, MIN_BUCKETS,
};
use crate::maglev::{self, NewLenError, DEFAULT_NEW_LEN, MAX_WEIGHT};
use crate::nat::NatType;
use crate::packet::IpFamily;
use crate::xlat::Rfc6052Prefix;
use core::fmt;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Longest idle timeout accepted, seconds (one day).
/// Pod indices kp can have in use at once (VIP-pod pairs, draining ones
/// included): the one limit the flow table's pod word, the per-thread
/// reference counts and pod route tracking are all sized from. The
/// controller refuses a change that could go beyond it, before anything
/// changes.
pub const MAX_POD_INDICES: u32 = 1 << 20;
pub const MAX_TIMEOUT: u32 = 86_400;

fn family_of(a: &IpAddr) -> IpFamily {
    match a {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

/// An address prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// A prefix from an address and length; host bits are cleared, as
    /// VPP's own route commands do.
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, ConfigError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return Err(ConfigError::BadPrefixLength { len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(IpPrefix { addr, len })
    }

    pub fn host(addr: IpAddr) -> IpPrefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn family(&self) -> IpFamily {
        family_of(&self.addr)
    }

    pub fn contains(&self, a: &IpAddr) -> bool {
        IpPrefix::new(*a, self.len).is_ok_and(|p| p.addr == self.addr)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = ConfigError;
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadPrefix(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr = IpAddr::from_str(a).map_err(|_| bad())?;
                let len = l.parse::<u8>().map_err(|_| bad())?;
                IpPrefix::new(addr, len)
            }
            None => Ok(IpPrefix::host(IpAddr::from_str(s).map_err(|_| bad())?)),
        }
    }
}

/// Which transport a VIP serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Both TCP and UDP (the default when none is given).
    Any,
}

impl Protocol {
    pub fn overlaps(self, other: Protocol) -> bool {
        self == other || self == Protocol::Any || other == Protocol::Any
    }

    /// Does this VIP protocol serve IP protocol number `p`?
    pub fn serves(self, p: u8) -> bool {
        matches!(
            (self, p),
            (Protocol::Any, crate::packet::proto::TCP | crate::packet::proto::UDP)
                | (Protocol::Tcp, crate::packet::proto::TCP)
                | (Protocol::Udp, crate::packet::proto::UDP)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Any => "tcp+udp",
        }
    }
}

/// What identifies a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub prefix: IpPrefix,
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} port {}", self.prefix, self.protocol.name(), self.port)
    }
}

/// A VIP as requested (before validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipSpec {
    pub key: VipKey,
    pub target_port: u16,
    /// 0: no NodePort.
    pub node_port: u16,
    /// `None`: the VIP's own family (nat44 or nat66).
    pub nat: Option<NatType>,
    /// `None`: [`DEFAULT_NEW_LEN`].
    pub new_len: Option<u32>,
}

/// A configured VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub key: VipKey,
    pub target_port: u16,
    pub node_port: u16,
    pub nat: NatType,
    pub new_len: u32,
    /// Pod address -> weight.
    pub pods: BTreeMap<IpAddr, u32>,
}

/// Flow-table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConf {
    /// Buckets per worker thread (a power of two).
    pub buckets: u32,
    /// Idle timeout, seconds.
    pub timeout: u32,
    /// Idle timeout of a flow that has sent one packet (or only TCP SYNs)
    /// so far, seconds: a flood of new flows then cannot hold the table
    /// for long. A flow uses the smaller of the two.
    pub embryonic: u32,
}

impl Default for FlowConf {
    fn default() -> Self {
        FlowConf { buckets: DEFAULT_BUCKETS, timeout: DEFAULT_TIMEOUT, embryonic: DEFAULT_EMBRYONIC_TIMEOUT }
    }
}

/// A `kp conf` change of the flow tables: each part if given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowChange {
    pub buckets: Option<u32>,
    pub timeout: Option<u32>,
    pub embryonic: Option<u32>,
}

impl FlowChange {
    /// The change that puts `flow` back.
    pub fn to(flow: FlowConf) -> FlowChange {
        FlowChange {
            buckets: Some(flow.buckets),
            timeout: Some(flow.timeout),
            embryonic: Some(flow.embryonic),
        }
    }
}

/// nat46 and nat64 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlatConf {
    /// Where nat46 embeds IPv4 clients' addresses (RFC 6052).
    pub nat46_prefix: Rfc6052Prefix,
    /// The node's IPv4 source addresses for nat64 flows (none: nat64 VIPs
    /// cannot be added).
    pub nat64_sources: Vec<Ipv4Addr>,
    /// The source ports nat64 allocates on each address (inclusive).
    pub nat64_ports: (u16, u16),
}

impl XlatConf {
    /// What the nat64 source pool is made of: its addresses and ports.
    pub fn nat64_pool(&self) -> (&[Ipv4Addr], (u16, u16)) {
        (&self.nat64_sources, self.nat64_ports)
    }
}

/// The nat46 prefix as a FIB prefix.
impl From<Rfc6052Prefix> for IpPrefix {
    fn from(p: Rfc6052Prefix) -> IpPrefix {
        IpPrefix::new(IpAddr::V6(p.addr()), p.prefix_len())
            .expect("an RFC 6052 prefix is a valid IPv6 prefix")
    }
}

/// The nat64 port range by default: the non-privileged ports.
pub const DEFAULT_NAT64_PORTS: (u16, u16) = (1024, 65535);

impl Default for XlatConf {
    fn default() -> Self {
        XlatConf {
            nat46_prefix: Rfc6052Prefix::LOCAL_USE,
            nat64_sources: Vec::new(),
            nat64_ports: DEFAULT_NAT64_PORTS,
        }
    }
}

/// A `kp conf` change of [`XlatConf`]: `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XlatChange {
    pub nat46_prefix: Option<Rfc6052Prefix>,
    pub nat64_sources: Option<Vec<Ipv4Addr>>,
    pub nat64_ports: Option<(u16, u16)>,
}

/// A pod selector for pod commands: a VIP prefix, optionally narrowed to
/// one protocol and one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodTarget {
    pub prefix: IpPrefix,
    pub protocol: Option<Protocol>,
    pub port: Option<u16>,
}

impl PodTarget {
    fn matches(&self, k: &VipKey) -> bool {
        k.prefix == self.prefix
            && self.protocol.is_none_or(|p| p == k.protocol)
            && self.port.is_none_or(|p| p == k.port)
    }
}

/// Every way a change can be refused. The `Display` text is what an
/// operator reads: it names the problem and the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    BadPrefix(String),
    BadPrefixLength {
        len: u8,
        max: u8,
    },
    BadBuckets(u32),
    BadTimeout(u32),
    BadNewLen(NewLenError),
    BadWeight(u32),
    PortZero(&'static str),
    /// A /0 VIP would take over the default route.
    DefaultRouteVip(IpPrefix),
    NatFamilyMismatch {
        prefix: IpPrefix,
        nat: NatType,
    },
    DuplicateVip(VipKey),
    NodePortClash {
        node_port: u16,
        other: VipKey,
    },
    UnknownVip(String),
    PodFamilyMismatch {
        pod: IpAddr,
        nat: NatType,
    },
    UnknownPod {
        pod: IpAddr,
        vip: VipKey,
    },
    NoPods,
    /// The flow table can name only so many pod indices at once.
    TooManyPods {
        max: u32,
    },
    /// Per-index counters (VPP's stats segment) have no room for this.
    CounterMemory {
        needed: u64,
        free: u64,
    },
    OutOfMemory {
        bytes: u64,
    },
    Nat64NoSource,
    BadNat64Source(Ipv4Addr),
    TooManyNat64Sources,
    BadNat64Ports(u16, u16),
    /// A translation setting cannot change while VIPs use it.
    XlatInUse {
        what: &'static str,
        vip: VipKey,
    },
    /// All VIPs of one prefix share a NAT type (it picks the capture node).
    MixedNat {
        prefix: IpPrefix,
        nat: NatType,
        other: NatType,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadPrefix(s) => write!(f, "'{s}' is not an IPv4 or IPv6 prefix"),
            ConfigError::BadPrefixLength { len, max } => {
                write!(f, "prefix length {len} is out of range (0 to {max})")
            }
            ConfigError::BadBuckets(n) => {
                write!(f, "buckets {n} must be a power of two from {MIN_BUCKETS} to {MAX_BUCKETS}")
            }
            ConfigError::BadTimeout(t) => {
                write!(f, "timeout {t} is out of range (1 to {MAX_TIMEOUT} seconds)")
            }
            ConfigError::BadNewLen(e) => write!(f, "{e}"),
            ConfigError::BadWeight(w) => {
                write!(f, "weight {w} is out of range (0 to {MAX_WEIGHT})")
            }
            ConfigError::PortZero(what) => write!(f, "{what} must be from 1 to 65535"),
            ConfigError::DefaultRouteVip(p) => {
                write!(f, "VIP prefix {p} would capture all traffic (the default route); use a longer prefix")
            }
            ConfigError::NatFamilyMismatch { prefix, nat } => {
                write!(f, "{nat} needs an {} VIP, but {prefix} is not", fam_name(nat.vip_family()))
            }
            ConfigError::DuplicateVip(k) => write!(f, "VIP {k} already exists"),
            ConfigError::NodePortClash { node_port, other } => {
                write!(f, "node_port {node_port} is already used by VIP {other}")
            }
            ConfigError::UnknownVip(what) => write!(f, "no VIP matches {what}"),
            ConfigError::PodFamilyMismatch { pod, nat } => {
                write!(f, "pod {pod} is not {}, as this VIP's {nat} pods must be", fam_name(nat.pod_family()))
            }
            ConfigError::UnknownPod { pod, vip } => {
                write!(f, "pod {pod} is not a pod of VIP {vip}")
            }
            ConfigError::NoPods => write!(f, "no pod address given"),
            ConfigError::TooManyPods { max } => {
                write!(f, "too many pods: at most {max} (pods of all VIPs, draining ones included)")
            }
            ConfigError::OutOfMemory { bytes } => write!(f, "cannot allocate {bytes} bytes for flow state"),
            ConfigError::CounterMemory { needed, free } => write!(
                f,
                "the stats segment cannot hold the counters of this change: it needs {} KiB more and {} KiB \
                 are free beyond VPP's reserve (raise statseg {{ size }} in startup.conf)",
                needed / 1024,
                free / 1024
            ),
            ConfigError::Nat64NoSource => {
                write!(f, "a nat64 VIP needs a source address first: kp conf nat64 source <ipv4-address>")
            }
            ConfigError::BadNat64Source(a) => {
                write!(f, "nat64 source {a} must be a unicast IPv4 address")
            }
            ConfigError::TooManyNat64Sources => {
                write!(f, "at most {} nat64 source addresses, each different", crate::nat64::MAX_SOURCES)
            }
            ConfigError::BadNat64Ports(lo, hi) => {
                write!(f, "nat64 ports {lo}-{hi}: the range must go from 1 up, lowest first")
            }
            ConfigError::XlatInUse { what, vip } => {
                write!(f, "the {what} cannot change while VIP {vip} uses it; delete that VIP first")
            }
            ConfigError::MixedNat { prefix, nat, other } => {
                write!(f, "VIP prefix {prefix} has {other} VIPs; a {nat} VIP needs a prefix of its own")
            }
        }
    }
}

fn fam_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub flow: FlowConf,
    /// New flows to a VIP without pods are dropped silently (`kp conf
    /// reject off`) instead of answered with a TCP reset or ICMP port
    /// unreachable, as kube-proxy does (the default).
    pub no_endpoint_drop: bool,
    pub xlat: XlatConf,
    pub vips: BTreeMap<VipKey, Vip>,
}

pub fn validate_buckets(n: u32) -> Result<u32, ConfigError> {
    if n.is_power_of_two() && (MIN_BUCKETS..=MAX_BUCKETS).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::BadBuckets(n))
    }
}

pub fn validate_timeout(t: u32) -> Result<u32, ConfigError> {
    if (1..=MAX_TIMEOUT).contains(&t) {
        Ok(t)
    } else {
        Err(ConfigError::BadTimeout(t))
    }
}

impl Config {
    /// `kp conf`: `None` keeps the current value.
    pub fn set_flow(&mut self, buckets: Option<u32>, timeout: Option<u32>) -> Result<(), ConfigError> {
        self.change_flow(&FlowChange { buckets, timeout, embryonic: None })
    }

    /// `kp conf [buckets] [timeout] [embryonic-timeout]`, all or nothing.
    pub fn change_flow(&mut self, c: &FlowChange) -> Result<(), ConfigError> {
        let buckets = c.buckets.map(validate_buckets).transpose()?;
        let timeout = c.timeout.map(validate_timeout).transpose()?;
        let embryonic = c.embryonic.map(validate_timeout).transpose()?;
        if let Some(e) = embryonic {
            self.flow.embryonic = e;
        }
        if let Some(b) = buckets {
            self.flow.buckets = b;
        }
        if let Some(t) = timeout {
            self.flow.timeout = t;
        }
        Ok(())
    }

    /// `kp conf nat46 ... / nat64 ...`: validated whole, then applied. A
    /// setting in use by a VIP of its type cannot change (its flows' state
    /// is built on it).
    pub fn set_xlat(&mut self, c: &XlatChange) -> Result<(), ConfigError> {
        let mut next = self.xlat.clone();
        if let Some(p) = c.nat46_prefix {
            next.nat46_prefix = p;
        }
        if let Some(s) = &c.nat64_sources {
            for a in s {
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                    return Err(ConfigError::BadNat64Source(*a));
                }
            }
            let mut uniq = s.clone();
            uniq.sort();
            uniq.dedup();
            if s.len() > crate::nat64::MAX_SOURCES || uniq.len() != s.len() {
                return Err(ConfigError::TooManyNat64Sources);
            }
            next.nat64_sources = s.clone();
        }
        if let Some((lo, hi)) = c.nat64_ports {
            if lo == 0 || lo > hi {
                return Err(ConfigError::BadNat64Ports(lo, hi));
            }
            next.nat64_ports = (lo, hi);
        }
        let in_use = |nat: NatType| self.vips.values().find(|v| v.nat == nat).map(|v| v.key);
        if next.nat46_prefix != self.xlat.nat46_prefix {
            if let Some(vip) = in_use(NatType::Nat46) {
                return Err(ConfigError::XlatInUse { what: "nat46 prefix", vip });
            }
        }
        if next.nat64_pool() != self.xlat.nat64_pool() {
            if let Some(vip) = in_use(NatType::Nat64) {
                return Err(ConfigError::XlatInUse { what: "nat64 source pool", vip });
            }
        }
        self.xlat = next;
        Ok(())
    }

    /// Validates a VIP against the current configuration.
    pub fn check_vip(&self, spec: &VipSpec) -> Result<Vip, ConfigError> {
        let k = spec.key;
        if k.prefix.prefix_len() == 0 {
            return Err(ConfigError::DefaultRouteVip(k.prefix));
        }
        if k.port == 0 {
            return Err(ConfigError::PortZero("port"));
        }
        if spec.target_port == 0 {
            return Err(ConfigError::PortZero("target_port"));
        }
        let nat = spec.nat.unwrap_or(match k.prefix.family() {
            IpFamily::V4 => NatType::Nat44,
            IpFamily::V6 => NatType::Nat66,
        });
        if nat.vip_family() != k.prefix.family() {
            return Err(ConfigError::NatFamilyMismatch { prefix: k.prefix, nat });
        }
        if nat == NatType::Nat64 && self.xlat.nat64_sources.is_empty() {
            return Err(ConfigError::Nat64NoSource);
        }
        if let Some(other) = self.vips.values().find(|v| v.key.prefix == k.prefix && v.nat != nat) {
            return Err(ConfigError::MixedNat { prefix: k.prefix, nat, other: other.nat });
        }
        let new_len = maglev::validate_new_len(spec.new_len.unwrap_or(DEFAULT_NEW_LEN))
            .map_err(ConfigError::BadNewLen)?;
        for other in self.vips.keys() {
            if other.prefix == k.prefix && other.port == k.port && other.protocol.overlaps(k.protocol) {
                return Err(ConfigError::DuplicateVip(*other));
            }
        }
        if spec.node_port != 0 {
            for v in self.vips.values() {
                // Per family: a dual-stack Service's two VIPs share one.
                let same_family = v.key.prefix.family() == k.prefix.family();
                if v.node_port == spec.node_port && same_family && v.key.protocol.overlaps(k.protocol) {
                    return Err(ConfigError::NodePortClash { node_port: spec.node_port, other: v.key });
                }
            }
        }
        Ok(Vip {
            key: k,
            target_port: spec.target_port,
            node_port: spec.node_port,
            nat,
            new_len,
            pods: BTreeMap::new(),
        })
    }

    pub fn add_vip(&mut self, spec: &VipSpec) -> Result<(), ConfigError> {
        let vip = self.check_vip(spec)?;
        self.vips.insert(vip.key, vip);
        Ok(())
    }

    /// Deletes a VIP (and with it its pods).
    pub fn del_vip(&mut self, key: &VipKey) -> Result<Vip, ConfigError> {
        self.vips.remove(key).ok_or_else(|| ConfigError::UnknownVip(key.to_string()))
    }

    /// The keys of the VIPs a pod command applies to; at least one.
    pub fn targets(&self, t: &PodTarget) -> Result<Vec<VipKey>, ConfigError> {
        let keys: Vec<VipKey> = self.vips.keys().filter(|k| t.matches(k)).copied().collect();
        if keys.is_empty() {
            let mut what = t.prefix.to_string();
            if let Some(p) = t.protocol {
                what += &format!(" protocol {}", p.name());
            }
            if let Some(p) = t.port {
                what += &format!(" port {p}");
            }
            return Err(ConfigError::UnknownVip(what));
        }
        Ok(keys)
    }

    /// Adds pods (or changes the weight of pods already there) on every VIP
    /// the target selects. Returns the VIPs changed.
    pub fn add_pods(&mut self, t: &PodTarget, pods: &[(IpAddr, u32)]) -> Result<Vec<VipKey>, ConfigError> {
        if pods.is_empty() {
            return Err(ConfigError::NoPods);
        }
        let keys = self.targets(t)?;
        for &(addr, w) in pods {
            if w > MAX_WEIGHT {
                return Err(ConfigError::BadWeight(w));
            }
            for k in &keys {
                let nat = self.vips[k].nat;
                if family_of(&addr) != nat.pod_family() {
                    return Err(ConfigError::PodFamilyMismatch { pod: addr, nat });
                }
            }
        }
        for k in &keys {
            let vip = self.vips.get_mut(k).expect("key from targets");
            for &(addr, w) in pods {
                vip.pods.insert(addr, w);
            }
        }
        Ok(keys)
    }

    /// Removes one pod from one VIP, if there (callers validate first).
    pub fn remove_pod(&mut self, key: &VipKey, addr: &IpAddr) {
        if let Some(v) = self.vips.get_mut(key) {
            v.pods.remove(addr);
        }
    }

    /// Removes pods from every VIP the target selects; each pod must be on
    /// every one of them.
    pub fn del_pods(&mut self, t: &PodTarget, pods: &[IpAddr]) -> Result<Vec<VipKey>, ConfigError> {
        if pods.is_empty() {
            return Err(ConfigError::NoPods);
        }
        let keys = self.targets(t)?;
        for k in &keys {
            for p in pods {
                if !self.vips[k].pods.contains_key(p) {
                    return Err(ConfigError::UnknownPod { pod: *p, vip: *k });
                }
            }
        }
        for k in &keys {
            let vip = self.vips.get_mut(k).expect("key from targets");
            for p in pods {
                vip.pods.remove(p);
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, proto: Protocol, port: u16) -> VipKey {
        VipKey { prefix: p.parse().unwrap(), protocol: proto, port }
    }

    fn spec(p: &str, port: u16) -> VipSpec {
        VipSpec {
            key: key(p, Protocol::Any, port),
            target_port: 8080,
            node_port: 0,
            nat: None,
            new_len: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_mask() {
        let p: IpPrefix = "10.96.0.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.96.0.0/24");
        assert!(p.contains(&ip("10.96.0.200")));
        assert!(!p.contains(&ip("10.96.1.1")));
        assert_eq!("2001:db8::1/120".parse::<IpPrefix>().unwrap().to_string(), "2001:db8::/120");
        assert_eq!("10.0.0.1".parse::<IpPrefix>().unwrap().prefix_len(), 32);
        assert_eq!(
            "10.0.0.1/33".parse::<IpPrefix>().unwrap_err().to_string(),
            "prefix length 33 is out of range (0 to 32)"
        );
        assert_eq!("nonsense".parse::<IpPrefix>().unwrap_err(), ConfigError::BadPrefix("nonsense".into()));
        assert!("10.0.0.1/".parse::<IpPrefix>().is_err());
        assert!("10.0.0.1/-1".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn vip_defaults_and_validation() {
        let mut c = Config::default();
        c.add_vip(&spec("10.96.0.10/32", 80)).unwrap();
        let v = &c.vips[&key("10.96.0.10/32", Protocol::Any, 80)];
        assert_eq!((v.nat, v.new_len), (NatType::Nat44, DEFAULT_NEW_LEN));
        c.add_vip(&spec("2001:db8::10/128", 80)).unwrap();
        assert_eq!(c.vips[&key("2001:db8::10/128", Protocol::Any, 80)].nat, NatType::Nat66);

        let before = c.clone();
        let mut s = spec("10.96.0.10/32", 80);
        s.key.protocol = Protocol::Tcp;
        assert_eq!(
            c.add_vip(&s).unwrap_err().to_string(),
            "VIP 10.96.0.10/32 tcp+udp port 80 already exists"
        );
        let mut s = spec("10.96.0.11/32", 80);
        s.nat = Some(NatType::Nat66);
        assert_eq!(
            c.add_vip(&s).unwrap_err().to_string(),
            "nat66 needs an IPv6 VIP, but 10.96.0.11/32 is not"
        );
        let mut s = spec("10.96.0.11/32", 80);
        s.new_len = Some(1000);
        assert!(matches!(c.add_vip(&s), Err(ConfigError::BadNewLen(_))));
        let mut s = spec("10.96.0.11/32", 0);
        assert_eq!(c.add_vip(&s).unwrap_err(), ConfigError::PortZero("port"));
        s.key.port = 1;
        s.target_port = 0;
        assert_eq!(c.add_vip(&s).unwrap_err(), ConfigError::PortZero("target_port"));
        assert_eq!(
            c.add_vip(&spec("0.0.0.0/0", 80)).unwrap_err().to_string(),
            "VIP prefix 0.0.0.0/0 would capture all traffic (the default route); use a longer prefix"
        );
        assert_eq!(c, before, "rejected changes leave the configuration as it was");

        // Same prefix, other port; and same port, other protocol: separate VIPs.
        c.add_vip(&spec("10.96.0.10/32", 443)).unwrap();
        let mut t = spec("10.96.0.20/32", 53);
        t.key.protocol = Protocol::Udp;
        c.add_vip(&t).unwrap();
        t.key.protocol = Protocol::Tcp;
        c.add_vip(&t).unwrap();
        assert_eq!(c.vips.len(), 5);
    }

    #[test]
    fn node_ports_must_not_clash() {
        let mut c = Config::default();
        let mut s = spec("10.96.0.10/32", 80);
        s.node_port = 30080;
        c.add_vip(&s).unwrap();
        let mut s2 = spec("10.96.0.11/32", 80);
        s2.node_port = 30080;
        assert_eq!(
            c.add_vip(&s2).unwrap_err().to_string(),
            "node_port 30080 is already used by VIP 10.96.0.10/32 tcp+udp port 80"
        );
        s2.node_port = 30081;
        c.add_vip(&s2).unwrap();
        // The IPv6 VIP of a dual-stack Service takes the same node port.
        let mut s6 = spec("2001:db8::10/128", 80);
        s6.node_port = 30080;
        c.add_vip(&s6).unwrap();
        let mut s6b = spec("2001:db8::11/128", 80);
        s6b.node_port = 30080;
        assert!(c.add_vip(&s6b).is_err());
    }

    #[test]
    fn pods_add_update_delete() {
        let mut c = Config::default();
        c.add_vip(&spec("10.96.0.10/32", 80)).unwrap();
        c.add_vip(&spec("10.96.0.10/32", 443)).unwrap();
        let all = PodTarget { prefix: "10.96.0.10/32".parse().unwrap(), protocol: None, port: None };
        let changed = c.add_pods(&all, &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 2)]).unwrap();
        assert_eq!(changed.len(), 2, "without a port, every port of the prefix");
        let p443 = PodTarget { port: Some(443), ..all };
        c.add_pods(&p443, &[(ip("10.1.0.1"), 5)]).unwrap();
        assert_eq!(c.vips[&key("10.96.0.10/32", Protocol::Any, 443)].pods[&ip("10.1.0.1")], 5);
        assert_eq!(c.vips[&key("10.96.0.10/32", Protocol::Any, 80)].pods[&ip("10.1.0.1")], 1);

        let before = c.clone();
        assert_eq!(
            c.add_pods(&all, &[(ip("10.1.0.3"), 1), (ip("2001:db8::1"), 1)]).unwrap_err().to_string(),
            "pod 2001:db8::1 is not IPv4, as this VIP's nat44 pods must be"
        );
        assert!(matches!(
            c.add_pods(&all, &[(ip("10.1.0.3"), MAX_WEIGHT + 1)]),
            Err(ConfigError::BadWeight(_))
        ));
        assert_eq!(
            c.del_pods(&all, &[ip("10.1.0.1"), ip("10.1.0.9")]).unwrap_err().to_string(),
            "pod 10.1.0.9 is not a pod of VIP 10.96.0.10/32 tcp+udp port 80"
        );
        let other = PodTarget { prefix: "10.96.0.99/32".parse().unwrap(), ..all };
        assert_eq!(
            c.add_pods(&other, &[(ip("10.1.0.1"), 1)]).unwrap_err().to_string(),
            "no VIP matches 10.96.0.99/32"
        );
        let p8080 = PodTarget { port: Some(8080), ..all };
        assert_eq!(
            c.add_pods(&p8080, &[(ip("10.1.0.1"), 1)]).unwrap_err().to_string(),
            "no VIP matches 10.96.0.10/32 port 8080"
        );
        assert_eq!(c.add_pods(&all, &[]).unwrap_err(), ConfigError::NoPods);
        assert_eq!(c, before);

        c.del_pods(&all, &[ip("10.1.0.1")]).unwrap();
        assert!(c.vips.values().all(|v| v.pods.len() == 1));
        let removed = c.del_vip(&key("10.96.0.10/32", Protocol::Any, 80)).unwrap();
        assert_eq!(removed.pods.len(), 1);
        assert!(c.del_vip(&key("10.96.0.10/32", Protocol::Any, 80)).is_err());
    }

    #[test]
    fn flow_conf() {
        let mut c = Config::default();
        c.set_flow(Some(1 << 20), None).unwrap();
        c.set_flow(None, Some(300)).unwrap();
        assert_eq!(c.flow, FlowConf { buckets: 1 << 20, timeout: 300, embryonic: DEFAULT_EMBRYONIC_TIMEOUT });
        assert_eq!(
            c.set_flow(Some(1000), Some(5)).unwrap_err().to_string(),
            format!("buckets 1000 must be a power of two from {MIN_BUCKETS} to {MAX_BUCKETS}")
        );
        assert_eq!(c.set_flow(Some(1024), Some(0)).unwrap_err(), ConfigError::BadTimeout(0));
        assert_eq!(
            c.flow,
            FlowConf { buckets: 1 << 20, timeout: 300, embryonic: DEFAULT_EMBRYONIC_TIMEOUT },
            "all or nothing"
        );
    }
}

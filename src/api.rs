//! kp's binary API (kp.api) without VPP: decoding requests from their
//! network-order bytes, applying them through the same validation as the
//! CLI ([`crate::control::Kp`]), and encoding replies and dump details.
//!
//! Message names and CRCs come from `kp.api` at build time
//! ([`MESSAGES`]); the VPP glue (`crate::vpp::api`) only registers them,
//! hands bytes in and sends bytes out.

use crate::config::{ConfigError, FlowChange, IpPrefix, PodTarget, Protocol, VipKey, VipSpec, XlatChange};
use crate::control::{Change, DataPathView, Kp};
use crate::nat::NatType;
use crate::nat64::MAX_SOURCES;
use crate::packet::IpFamily;
use crate::xlat::Rfc6052Prefix;
use std::net::IpAddr;

include!(concat!(env!("OUT_DIR"), "/kp_api_messages.rs"));

/// The full kp.api.json, for `bootstrapapi` clients.
pub const JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/kp.api.json"));

impl Msg {
    pub fn from_offset(i: u16) -> Option<Msg> {
        ALL.get(usize::from(i)).copied()
    }

    pub fn offset(self) -> u16 {
        self as u16
    }

    pub fn name(self) -> &'static str {
        MESSAGES[self as usize].0
    }
}

/// VPP error codes, one meaning each (documented in kp.api).
pub mod retval {
    pub const INVALID_SW_IF_INDEX: i32 = -2;
    pub const NO_SUCH_ENTRY: i32 = -6;
    pub const INVALID_VALUE: i32 = -7;
    pub const INVALID_VALUE_2: i32 = -8;
    pub const ADDRESS_LENGTH_MISMATCH: i32 = -59;
    pub const INVALID_MEMORY_SIZE: i32 = -70;
    pub const INVALID_ARGUMENT: i32 = -73;
    pub const INVALID_ADDRESS_FAMILY: i32 = -97;
    pub const ADDRESS_IN_USE: i32 = -105;
    pub const ENTRY_ALREADY_EXISTS: i32 = -116;
    pub const INVALID_PROTOCOL: i32 = -153;
    pub const FEATURE_ALREADY_DISABLED: i32 = -169;
    pub const LIMIT_EXCEEDED: i32 = -162;
    pub const FEATURE_ALREADY_ENABLED: i32 = -170;
}

/// The retval for a refused configuration change.
pub fn retval_of(e: &ConfigError) -> i32 {
    use retval::*;
    match e {
        ConfigError::BadPrefix(_) | ConfigError::BadPrefixLength { .. } | ConfigError::DefaultRouteVip(_) => {
            ADDRESS_LENGTH_MISMATCH
        }
        ConfigError::BadBuckets(_)
        | ConfigError::BadTimeout(_)
        | ConfigError::BadNewLen(_)
        | ConfigError::BadWeight(_)
        | ConfigError::PortZero(_)
        | ConfigError::NoPods => INVALID_VALUE,
        ConfigError::NatFamilyMismatch { .. } | ConfigError::PodFamilyMismatch { .. } => {
            INVALID_ADDRESS_FAMILY
        }
        ConfigError::DuplicateVip(_) => ENTRY_ALREADY_EXISTS,
        ConfigError::NodePortClash { .. } => ADDRESS_IN_USE,
        ConfigError::UnknownVip(_) | ConfigError::UnknownPod { .. } => NO_SUCH_ENTRY,
        ConfigError::OutOfMemory { .. } | ConfigError::CounterMemory { .. } => INVALID_MEMORY_SIZE,
        ConfigError::BadNat64Source(_)
        | ConfigError::BadNat64Ports(..)
        | ConfigError::TooManyNat64Sources => INVALID_VALUE,
        ConfigError::Nat64NoSource | ConfigError::XlatInUse { .. } | ConfigError::MixedNat { .. } => {
            INVALID_VALUE_2
        }
        ConfigError::TooManyPods { .. } => LIMIT_EXCEEDED,
    }
}

/// Big-endian reader over a message body; every read is bounds-checked
/// (the VPP dispatcher already dropped messages shorter than their size).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], i32> {
        let s = self.b.get(self.at..self.at + n).ok_or(retval::INVALID_ARGUMENT)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, i32> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, i32> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, i32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn bool(&mut self) -> Result<bool, i32> {
        Ok(self.u8()? != 0)
    }
    /// `vl_api_address_t`: af (u8) then a 16-byte union.
    fn address(&mut self) -> Result<IpAddr, i32> {
        let af = self.u8()?;
        let un = self.take(16)?;
        match af {
            0 => Ok(IpAddr::from([un[0], un[1], un[2], un[3]])),
            1 => Ok(IpAddr::from(<[u8; 16]>::try_from(un).unwrap())),
            _ => Err(retval::INVALID_ADDRESS_FAMILY),
        }
    }
    /// `vl_api_prefix_t`: address then length.
    fn prefix(&mut self) -> Result<IpPrefix, i32> {
        let a = self.address()?;
        let len = self.u8()?;
        IpPrefix::new(a, len).map_err(|e| retval_of(&e))
    }
    fn protocol(&mut self) -> Result<Protocol, i32> {
        match self.u8()? {
            6 => Ok(Protocol::Tcp),
            17 => Ok(Protocol::Udp),
            255 => Ok(Protocol::Any),
            _ => Err(retval::INVALID_PROTOCOL),
        }
    }
}

/// Big-endian writer for replies.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn address(&mut self, a: &IpAddr) -> &mut Self {
        let mut un = [0u8; 16];
        match a {
            IpAddr::V4(v4) => {
                un[..4].copy_from_slice(&v4.octets());
                self.u8(0);
            }
            IpAddr::V6(v6) => {
                un = v6.octets();
                self.u8(1);
            }
        }
        self.0.extend_from_slice(&un);
        self
    }
    fn prefix(&mut self, p: &IpPrefix) -> &mut Self {
        self.address(&p.addr()).u8(p.prefix_len())
    }
    fn protocol(&mut self, p: Protocol) -> &mut Self {
        self.u8(match p {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Any => 255,
        })
    }
}

fn nat_code(n: NatType) -> u8 {
    match n {
        NatType::Nat44 => 1,
        NatType::Nat66 => 2,
        NatType::Nat46 => 3,
        NatType::Nat64 => 4,
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A configuration change, validated like the CLI's.
    Change(Change),
    ConfGet,
    XlatGet,
    SetInterfaceNat {
        sw_if_index: u32,
        family: IpFamily,
        is_add: bool,
    },
    InterfaceNatDump,
    VipDump {
        filter: Option<IpPrefix>,
    },
    PodDump {
        target: PodTarget,
    },
}

/// Decodes a request body (the whole message, header included).
pub fn decode(msg: Msg, bytes: &[u8]) -> Result<Request, i32> {
    let mut r = Reader { b: bytes, at: 10 }; // _vl_msg_id, client_index, context
    if bytes.len() < msg.size() {
        return Err(retval::INVALID_ARGUMENT);
    }
    let keep = |v: u32| (v != u32::MAX).then_some(v);
    Ok(match msg {
        Msg::Conf => {
            let (b, t, e) = (r.u32()?, r.u32()?, r.u32()?);
            Request::Change(Change::Conf(FlowChange {
                buckets: keep(b),
                timeout: keep(t),
                embryonic: keep(e),
            }))
        }
        Msg::ConfGet => Request::ConfGet,
        Msg::XlatSet => {
            let set_prefix = r.bool()?;
            let prefix = r.prefix()?;
            let set_pool = r.bool()?;
            let (first, last, n) = (r.u16()?, r.u16()?, usize::from(r.u8()?));
            let mut sources = Vec::new();
            for i in 0..MAX_SOURCES {
                let a = r.take(4)?;
                if i < n {
                    sources.push(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                }
            }
            if n > MAX_SOURCES {
                return Err(retval::INVALID_VALUE);
            }
            let nat46_prefix = if set_prefix {
                let IpAddr::V6(a) = prefix.addr() else { return Err(retval::INVALID_ADDRESS_FAMILY) };
                Some(Rfc6052Prefix::new(a, prefix.prefix_len()).map_err(|_| retval::INVALID_VALUE)?)
            } else {
                None
            };
            Request::Change(Change::Xlat(XlatChange {
                nat46_prefix,
                nat64_sources: set_pool.then_some(sources),
                nat64_ports: set_pool.then_some((first, last)),
            }))
        }
        Msg::XlatGet => Request::XlatGet,
        Msg::AddDelVip => {
            let prefix = r.prefix()?;
            let protocol = r.protocol()?;
            let (port, target_port, node_port) = (r.u16()?, r.u16()?, r.u16()?);
            let nat = match r.u8()? {
                0 => None,
                1 => Some(NatType::Nat44),
                2 => Some(NatType::Nat66),
                3 => Some(NatType::Nat46),
                4 => Some(NatType::Nat64),
                _ => return Err(retval::INVALID_VALUE),
            };
            let new_len = r.u32()?;
            let key = VipKey { prefix, protocol, port };
            if r.bool()? {
                Request::Change(Change::DelVip(key))
            } else {
                Request::Change(Change::AddVip(VipSpec {
                    key,
                    target_port,
                    node_port,
                    nat,
                    new_len: Some(new_len),
                }))
            }
        }
        Msg::AddDelPod => {
            let prefix = r.prefix()?;
            let protocol = r.protocol()?;
            let port = r.u16()?;
            let pod = r.address()?;
            let weight = r.u32()?;
            let (is_del, is_flush) = (r.bool()?, r.bool()?);
            let target = PodTarget {
                prefix,
                protocol: (protocol != Protocol::Any).then_some(protocol),
                port: (port != 0).then_some(port),
            };
            match (is_del, is_flush) {
                (false, true) => return Err(retval::INVALID_ARGUMENT),
                (true, flush) => Request::Change(Change::DelPods { target, pods: vec![pod], flush }),
                (false, false) => Request::Change(Change::AddPods { target, pods: vec![(pod, weight)] }),
            }
        }
        Msg::SetInterfaceNat => {
            let sw_if_index = r.u32()?;
            let family = match r.u8()? {
                0 => IpFamily::V4,
                1 => IpFamily::V6,
                _ => return Err(retval::INVALID_ADDRESS_FAMILY),
            };
            Request::SetInterfaceNat { sw_if_index, family, is_add: r.bool()? }
        }
        Msg::InterfaceNatDump => Request::InterfaceNatDump,
        Msg::VipDump => {
            let filter = r.bool()?;
            let prefix = r.prefix()?;
            Request::VipDump { filter: filter.then_some(prefix) }
        }
        Msg::PodDump => {
            let prefix = r.prefix()?;
            let protocol = r.protocol()?;
            let port = r.u16()?;
            Request::PodDump {
                target: PodTarget {
                    prefix,
                    protocol: (protocol != Protocol::Any).then_some(protocol),
                    port: (port != 0).then_some(port),
                },
            }
        }
        _ => return Err(retval::INVALID_ARGUMENT),
    })
}

/// A reply to send: its message and body after `_vl_msg_id` (context
/// first). The glue prepends the message ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg: Msg,
    pub body: Vec<u8>,
}

fn reply(msg: Msg, context: u32, retval: i32) -> Reply {
    let mut w = Writer(Vec::with_capacity(msg.size()));
    w.u32(context).u32(retval as u32);
    Reply { msg, body: w.0 }
}

/// The context field of a request.
pub fn context_of(bytes: &[u8]) -> u32 {
    bytes.get(6..10).map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()))
}

/// What the API needs from VPP besides the control plane.
pub trait Host {
    /// The name of a valid sw_if_index.
    fn interface_name(&self, sw_if_index: u32) -> Option<String>;
    /// Makes the flow tables take `flow` (see [`Kp::apply_conf`]).
    fn resize_flow_tables(&self, flow: crate::config::FlowConf) -> Result<(), ConfigError>;
    /// Readies VPP for a change about to be applied (memory it needs);
    /// an error refuses the change.
    fn prepare(&self, _change: &Change) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Brings VPP in line with an applied change (FIB entries, counters).
    fn applied(&self, kp: &mut Kp, applied: &crate::control::Applied);
    /// Turns the reply-translation feature on or off; false if VPP refuses.
    fn set_reply_feature(&self, family: IpFamily, sw_if_index: u32, enable: bool) -> bool;
}

/// Handles one request: the replies to send, in order (one reply, or the
/// details of a dump). Every failure is a reply with a negative retval;
/// nothing is changed then.
pub fn handle(kp: &mut Kp, msg: Msg, bytes: &[u8], view: &dyn DataPathView, ifs: &dyn Host) -> Vec<Reply> {
    let mut replies = handle_message(kp, msg, bytes, view, ifs);
    // An error reply carries only context and retval; the message is still
    // of its full size (the rest zero), as clients decode it by its
    // definition.
    for r in &mut replies {
        r.body.resize(r.msg.size() - 2, 0);
    }
    replies
}

fn handle_message(
    kp: &mut Kp,
    msg: Msg,
    bytes: &[u8],
    view: &dyn DataPathView,
    ifs: &dyn Host,
) -> Vec<Reply> {
    let context = context_of(bytes);
    let Some(reply_msg) = msg.reply() else { return Vec::new() };
    let req = match decode(msg, bytes) {
        Ok(r) => r,
        Err(rv) if matches!(msg, Msg::InterfaceNatDump | Msg::VipDump | Msg::PodDump) => {
            // A dump has no retval: a bad filter yields no details.
            let _ = rv;
            return Vec::new();
        }
        Err(rv) => return vec![reply(reply_msg, context, rv)],
    };
    match req {
        Request::Change(cmd) => {
            let done = match cmd {
                Change::Conf(f) => kp
                    .apply_conf(f, |flow| ifs.resize_flow_tables(flow))
                    .map(|()| ifs.applied(kp, &Default::default())),
                _ => ifs.prepare(&cmd).and_then(|()| kp.apply_typed(&cmd)).map(|a| ifs.applied(kp, &a)),
            };
            vec![reply(reply_msg, context, done.map_or_else(|e| retval_of(&e), |()| 0))]
        }
        Request::ConfGet => {
            let f = kp.controller.config().flow;
            let mut r = reply(reply_msg, context, 0);
            let mut w = Writer(core::mem::take(&mut r.body));
            w.u32(f.buckets)
                .u32(f.timeout)
                .u32(view.flow_tables().len() as u32)
                .u32(f.embryonic.min(f.timeout));
            r.body = w.0;
            vec![r]
        }
        Request::XlatGet => {
            let x = &kp.controller.config().xlat;
            let bindings = kp.controller.nat64_pool().map_or(0, |pool| {
                pool.live_bindings(
                    view.now(),
                    crate::nat64::binding_lifetime(kp.controller.config().flow.timeout),
                )
            });
            let mut r = reply(reply_msg, context, 0);
            let mut w = Writer(core::mem::take(&mut r.body));
            w.prefix(&IpPrefix::from(x.nat46_prefix))
                .u16(x.nat64_ports.0)
                .u16(x.nat64_ports.1)
                .u8(x.nat64_sources.len() as u8);
            for i in 0..MAX_SOURCES {
                let a = x.nat64_sources.get(i).map_or([0; 4], |a| a.octets());
                w.0.extend_from_slice(&a);
            }
            w.u32(bindings as u32);
            r.body = w.0;
            vec![r]
        }
        Request::SetInterfaceNat { sw_if_index, family, is_add } => {
            let rv = match ifs.interface_name(sw_if_index) {
                None => retval::INVALID_SW_IF_INDEX,
                Some(name) => match kp.set_interface(family, sw_if_index, &name, is_add) {
                    Ok(()) if !ifs.set_reply_feature(family, sw_if_index, is_add) => {
                        let _ = kp.set_interface(family, sw_if_index, &name, !is_add);
                        retval::INVALID_SW_IF_INDEX
                    }
                    Ok(()) => 0,
                    Err(_) if is_add => retval::FEATURE_ALREADY_ENABLED,
                    Err(_) => retval::FEATURE_ALREADY_DISABLED,
                },
            };
            vec![reply(reply_msg, context, rv)]
        }
        Request::InterfaceNatDump => kp
            .interfaces
            .enabled
            .iter()
            .map(|(fam, sw, _)| {
                let mut w = Writer(Vec::new());
                w.u32(context).u32(*sw).u8(if *fam == 4 { 0 } else { 1 });
                Reply { msg: reply_msg, body: w.0 }
            })
            .collect(),
        Request::VipDump { filter } => {
            kp.controller.collect_garbage();
            let c = &kp.controller;
            let mut vips: Vec<_> = c
                .config()
                .vips
                .values()
                .filter(|v| {
                    filter.is_none_or(|p| {
                        p.contains(&v.key.prefix.addr()) && v.key.prefix.prefix_len() >= p.prefix_len()
                    })
                })
                .collect();
            vips.sort_by_key(|v| (v.key.prefix, v.key.port, v.key.protocol));
            vips.into_iter()
                .map(|v| {
                    let idx = c.vip_index(&v.key).expect("configured");
                    let k = view.vip_counters(idx);
                    let mut w = Writer(Vec::new());
                    w.u32(context)
                        .u32(idx)
                        .prefix(&v.key.prefix)
                        .protocol(v.key.protocol)
                        .u16(v.key.port)
                        .u16(v.target_port)
                        .u16(v.node_port)
                        .u8(nat_code(v.nat))
                        .u32(v.new_len)
                        .u32(v.pods.len() as u32)
                        .u64(k.existing)
                        .u64(k.first)
                        .u64(k.untracked)
                        .u64(k.no_pod);
                    Reply { msg: reply_msg, body: w.0 }
                })
                .collect()
        }
        Request::PodDump { target } => {
            kp.controller.collect_garbage();
            let c = &kp.controller;
            let dp = c.cell().load();
            let Ok(mut keys) = c.config().targets(&target) else { return Vec::new() };
            keys.sort_by_key(|k| (k.prefix, k.port, k.protocol));
            let mut out = Vec::new();
            for key in keys {
                let idx = c.vip_index(&key).expect("configured");
                let vip = &c.config().vips[&key];
                let table = dp.vips.get(idx as usize).and_then(|v| v.as_ref()).map(|v| v.table.clone());
                let mut pods: Vec<(IpAddr, u32, bool)> =
                    vip.pods.iter().map(|(a, w)| (*a, *w, false)).collect();
                pods.extend(c.draining_pods().filter(|(v, _, _)| *v == idx).map(|(_, a, _)| (a, 0, true)));
                for (addr, weight, draining) in pods {
                    let pod = c.pod_index(idx, &addr).expect("pods have indices");
                    let entries = table.as_ref().map_or(0, |t| t.count(pod)) as u32;
                    let mut w = Writer(Vec::new());
                    w.u32(context)
                        .u32(idx)
                        .prefix(&key.prefix)
                        .protocol(key.protocol)
                        .u16(key.port)
                        .address(&addr)
                        .u32(weight)
                        .u32(entries)
                        .u64(c.refs().sum(pod).max(0) as u64)
                        .u8(u8::from(draining));
                    out.push(Reply { msg: reply_msg, body: w.0 });
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{FlowTableStats, VipCounters};

    struct View;
    impl DataPathView for View {
        fn flow_tables(&self) -> Vec<FlowTableStats> {
            vec![FlowTableStats { buckets: 16, capacity: 64, ..Default::default() }]
        }
        fn vip_counters(&self, v: u32) -> VipCounters {
            VipCounters { existing: u64::from(v) + 1, first: 2, untracked: 3, no_pod: 4 }
        }
        fn pod_packets(&self, _: u32) -> u64 {
            0
        }
    }
    struct Ifs;
    impl Host for Ifs {
        fn interface_name(&self, sw: u32) -> Option<String> {
            (sw == 1).then(|| "pg0".into())
        }
        fn resize_flow_tables(&self, _: crate::config::FlowConf) -> Result<(), ConfigError> {
            Ok(())
        }
        fn applied(&self, _: &mut Kp, _: &crate::control::Applied) {}
        fn set_reply_feature(&self, _: IpFamily, _: u32, _: bool) -> bool {
            true
        }
    }

    fn header(context: u32) -> Writer {
        let mut w = Writer(Vec::new());
        w.u16(0).u32(0).u32(context);
        w
    }

    fn add_vip(prefix: &str, proto: u8, port: u16, nat: u8, new_len: u32, del: bool) -> Vec<u8> {
        let p: IpPrefix = prefix.parse().unwrap();
        let mut w = header(7);
        w.prefix(&p).u8(proto).u16(port).u16(8080).u16(0).u8(nat).u32(new_len).u8(u8::from(del));
        w.0
    }

    fn add_pod(prefix: &str, pod: &str, weight: u32, del: bool, flush: bool) -> Vec<u8> {
        let p: IpPrefix = prefix.parse().unwrap();
        let mut w = header(9);
        w.prefix(&p)
            .u8(255)
            .u16(0)
            .address(&pod.parse().unwrap())
            .u32(weight)
            .u8(u8::from(del))
            .u8(u8::from(flush));
        w.0
    }

    fn rv(replies: &[Reply]) -> i32 {
        assert_eq!(replies.len(), 1);
        i32::from_be_bytes(replies[0].body[4..8].try_into().unwrap())
    }

    #[test]
    fn sizes_match_the_definitions() {
        // Every request built by the tests has the size kp.api defines.
        assert_eq!(add_vip("10.0.0.1/32", 6, 80, 0, 1024, false).len(), Msg::AddDelVip.size());
        assert_eq!(add_pod("10.0.0.1/32", "10.1.0.1", 1, false, false).len(), Msg::AddDelPod.size());
        assert_eq!(MESSAGES.len(), ALL.len());
        for m in ALL {
            assert!(MESSAGES[m as usize].0.starts_with("kp_"));
        }
        assert_eq!(Msg::PodDetails.name(), "kp_pod_details");
    }

    #[test]
    fn every_size_matches_kp_api() {
        let resolve = |p: &str| {
            std::fs::read_to_string(format!("{}/vpp-headers/api/{p}", env!("CARGO_MANIFEST_DIR"))).ok()
        };
        let api = crate::apigen::Api::parse("kp", include_str!("../kp.api"), &resolve).unwrap();
        let sizes = api.wire_sizes();
        assert_eq!(sizes.len(), ALL.len());
        for (m, (name, size)) in ALL.iter().zip(&sizes) {
            assert_eq!((m.name(), m.size()), (name.as_str(), *size));
        }
    }

    fn xlat_set(prefix: Option<&str>, pool: Option<(&[&str], u16, u16)>) -> Vec<u8> {
        let mut w = header(11);
        let p: IpPrefix = prefix.unwrap_or("::/0").parse().unwrap();
        w.u8(u8::from(prefix.is_some())).prefix(&p);
        let (sources, lo, hi) = pool.unwrap_or((&[], 0, 0));
        w.u8(u8::from(pool.is_some())).u16(lo).u16(hi).u8(sources.len() as u8);
        for i in 0..MAX_SOURCES {
            let a: std::net::Ipv4Addr = sources.get(i).map_or("0.0.0.0", |s| *s).parse().unwrap();
            w.0.extend_from_slice(&a.octets());
        }
        w.0
    }

    #[test]
    fn xlat_set_and_get() {
        let mut kp = Kp::new(1);
        let set = xlat_set(Some("2001:db8:46::/96"), Some((&["192.0.2.1", "192.0.2.2"], 2000, 2999)));
        assert_eq!(set.len(), Msg::XlatSet.size());
        assert_eq!(rv(&handle(&mut kp, Msg::XlatSet, &set, &View, &Ifs)), 0);
        let get = header(12).0;
        let r = handle(&mut kp, Msg::XlatGet, &get, &View, &Ifs);
        assert_eq!(rv(&r), 0);
        let b = &r[0].body;
        assert_eq!(b.len() + 2, Msg::XlatGetReply.size());
        assert_eq!(b[8], 1, "an IPv6 prefix");
        assert_eq!(&b[9..15], &[0x20, 0x01, 0x0d, 0xb8, 0, 0x46]);
        assert_eq!(b[25], 96);
        assert_eq!(
            (&b[26..28], &b[28..30], b[30]),
            (&2000u16.to_be_bytes()[..], &2999u16.to_be_bytes()[..], 2)
        );
        assert_eq!(&b[31..39], &[192, 0, 2, 1, 192, 0, 2, 2]);
        // Refused: an IPv4 prefix, a /80, ports backwards, too many sources.
        let before = kp.controller.config().xlat.clone();
        for (bad, want) in [
            (xlat_set(Some("192.0.2.0/24"), None), retval::INVALID_ADDRESS_FAMILY),
            (xlat_set(Some("2001:db8::/80"), None), retval::INVALID_VALUE),
            (xlat_set(None, Some((&["192.0.2.1"], 3000, 2000))), retval::INVALID_VALUE),
        ] {
            assert_eq!(rv(&handle(&mut kp, Msg::XlatSet, &bad, &View, &Ifs)), want);
        }
        let mut too_many = xlat_set(None, Some((&["192.0.2.1"], 1, 2)));
        too_many[10 + 1 + 18 + 1 + 4] = MAX_SOURCES as u8 + 1;
        assert_eq!(rv(&handle(&mut kp, Msg::XlatSet, &too_many, &View, &Ifs)), retval::INVALID_VALUE);
        assert_eq!(kp.controller.config().xlat, before, "nothing changed");
        // A pool in use by a nat64 VIP stays.
        let r = handle(
            &mut kp,
            Msg::AddDelVip,
            &add_vip("2001:db8:64::1/128", 6, 80, 4, 1024, false),
            &View,
            &Ifs,
        );
        assert_eq!(rv(&r), 0);
        let clear = xlat_set(None, Some((&[], 1024, 65535)));
        assert_eq!(rv(&handle(&mut kp, Msg::XlatSet, &clear, &View, &Ifs)), retval::INVALID_VALUE_2);
    }

    #[test]
    fn add_dump_delete_round_trip() {
        let mut kp = Kp::new(1);
        let r =
            handle(&mut kp, Msg::AddDelVip, &add_vip("10.96.0.10/32", 6, 80, 0, 1024, false), &View, &Ifs);
        assert_eq!((r[0].msg, rv(&r)), (Msg::AddDelVipReply, 0));
        assert_eq!(&r[0].body[..4], &7u32.to_be_bytes(), "context echoed");
        let r = handle(
            &mut kp,
            Msg::AddDelPod,
            &add_pod("10.96.0.10/32", "10.1.0.1", 3, false, false),
            &View,
            &Ifs,
        );
        assert_eq!(rv(&r), 0);

        let mut w = header(11);
        w.u8(0).prefix(&"0.0.0.0/0".parse().unwrap());
        let d = handle(&mut kp, Msg::VipDump, &w.0, &View, &Ifs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].body.len() + 2, Msg::VipDetails.size());
        let mut r = Reader { b: &d[0].body, at: 0 };
        assert_eq!(r.u32().unwrap(), 11);
        assert_eq!(r.u32().unwrap(), 0);
        assert_eq!(r.prefix().unwrap(), "10.96.0.10/32".parse().unwrap());
        assert_eq!(r.protocol().unwrap(), Protocol::Tcp);
        assert_eq!((r.u16().unwrap(), r.u16().unwrap(), r.u16().unwrap()), (80, 8080, 0));
        assert_eq!(r.u8().unwrap(), 1, "nat44");
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (1024, 1));

        let mut w = header(12);
        w.prefix(&"10.96.0.10/32".parse().unwrap()).u8(255).u16(0);
        let d = handle(&mut kp, Msg::PodDump, &w.0, &View, &Ifs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].body.len() + 2, Msg::PodDetails.size());
        let mut r = Reader { b: &d[0].body, at: 0 };
        r.take(4 + 4 + 18 + 1 + 2).unwrap();
        assert_eq!(r.address().unwrap(), "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (3, 1024));

        // Filter that matches nothing.
        let mut w = header(13);
        w.u8(1).prefix(&"192.168.0.0/16".parse().unwrap());
        assert!(handle(&mut kp, Msg::VipDump, &w.0, &View, &Ifs).is_empty());

        let r = handle(&mut kp, Msg::AddDelVip, &add_vip("10.96.0.10/32", 6, 80, 0, 0, true), &View, &Ifs);
        assert_eq!(rv(&r), 0);
        assert!(kp.controller.config().vips.is_empty());
    }

    #[test]
    fn every_error_has_its_retval_and_changes_nothing() {
        let mut kp = Kp::new(1);
        handle(&mut kp, Msg::AddDelVip, &add_vip("10.96.0.10/32", 6, 80, 0, 1024, false), &View, &Ifs);
        let before = kp.controller.config().clone();
        let cases: Vec<(Msg, Vec<u8>, i32)> = vec![
            (Msg::AddDelVip, add_vip("10.96.0.10/32", 6, 80, 0, 1024, false), retval::ENTRY_ALREADY_EXISTS),
            (Msg::AddDelVip, add_vip("10.96.0.11/32", 6, 80, 0, 1000, false), retval::INVALID_VALUE),
            (Msg::AddDelVip, add_vip("10.96.0.11/32", 6, 0, 0, 1024, false), retval::INVALID_VALUE),
            (Msg::AddDelVip, add_vip("10.96.0.11/32", 6, 80, 9, 1024, false), retval::INVALID_VALUE),
            (Msg::AddDelVip, add_vip("10.96.0.11/32", 1, 80, 0, 1024, false), retval::INVALID_PROTOCOL),
            (Msg::AddDelVip, add_vip("10.96.0.11/32", 6, 80, 2, 1024, false), retval::INVALID_ADDRESS_FAMILY),
            (Msg::AddDelVip, add_vip("10.96.0.99/32", 6, 80, 0, 1024, true), retval::NO_SUCH_ENTRY),
            (Msg::AddDelVip, add_vip("0.0.0.0/0", 6, 80, 0, 1024, false), retval::ADDRESS_LENGTH_MISMATCH),
            (
                Msg::AddDelPod,
                add_pod("10.96.0.10/32", "fd00::1", 1, false, false),
                retval::INVALID_ADDRESS_FAMILY,
            ),
            (Msg::AddDelPod, add_pod("10.96.0.10/32", "10.1.0.1", 1, true, false), retval::NO_SUCH_ENTRY),
            (Msg::AddDelPod, add_pod("10.96.0.10/32", "10.1.0.1", 1, false, true), retval::INVALID_ARGUMENT),
            (
                Msg::AddDelPod,
                add_pod("10.96.0.10/32", "10.1.0.1", 2_000_000, false, false),
                retval::INVALID_VALUE,
            ),
            (Msg::AddDelPod, add_pod("10.96.9.9/32", "10.1.0.1", 1, false, false), retval::NO_SUCH_ENTRY),
        ];
        for (msg, bytes, want) in cases {
            assert_eq!(rv(&handle(&mut kp, msg, &bytes, &View, &Ifs)), want, "{msg:?}");
        }
        // Malformed bytes: prefix length 33, address family 7, short body.
        let mut bad = add_vip("10.96.0.12/32", 6, 80, 0, 1024, false);
        bad[10 + 17] = 33;
        assert_eq!(rv(&handle(&mut kp, Msg::AddDelVip, &bad, &View, &Ifs)), retval::ADDRESS_LENGTH_MISMATCH);
        bad[10] = 7;
        assert_eq!(rv(&handle(&mut kp, Msg::AddDelVip, &bad, &View, &Ifs)), retval::INVALID_ADDRESS_FAMILY);
        assert_eq!(rv(&handle(&mut kp, Msg::AddDelVip, &bad[..20], &View, &Ifs)), retval::INVALID_ARGUMENT);
        let mut w = header(1);
        w.u32(5).u8(0).u8(1);
        assert_eq!(
            rv(&handle(&mut kp, Msg::SetInterfaceNat, &w.0, &View, &Ifs)),
            retval::INVALID_SW_IF_INDEX
        );
        let mut w = header(1);
        w.u32(1).u8(3).u8(1);
        assert_eq!(
            rv(&handle(&mut kp, Msg::SetInterfaceNat, &w.0, &View, &Ifs)),
            retval::INVALID_ADDRESS_FAMILY
        );
        let mut w = header(1);
        w.u32(1000).u32(u32::MAX).u32(u32::MAX);
        assert_eq!(rv(&handle(&mut kp, Msg::Conf, &w.0, &View, &Ifs)), retval::INVALID_VALUE);
        let mut w = header(1);
        w.u32(u32::MAX).u32(u32::MAX).u32(0);
        assert_eq!(rv(&handle(&mut kp, Msg::Conf, &w.0, &View, &Ifs)), retval::INVALID_VALUE, "embryonic 0");
        assert_eq!(kp.controller.config(), &before);
    }

    #[test]
    fn interfaces_and_conf() {
        let mut kp = Kp::new(1);
        let mut w = header(1);
        w.u32(1).u8(0).u8(1);
        assert_eq!(rv(&handle(&mut kp, Msg::SetInterfaceNat, &w.0, &View, &Ifs)), 0);
        assert_eq!(
            rv(&handle(&mut kp, Msg::SetInterfaceNat, &w.0, &View, &Ifs)),
            retval::FEATURE_ALREADY_ENABLED
        );
        let d = handle(&mut kp, Msg::InterfaceNatDump, &header(3).0, &View, &Ifs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].body, [0, 0, 0, 3, 0, 0, 0, 1, 0]);
        let mut w = header(1);
        w.u32(4096).u32(u32::MAX).u32(3);
        assert_eq!(rv(&handle(&mut kp, Msg::Conf, &w.0, &View, &Ifs)), 0);
        let r = handle(&mut kp, Msg::ConfGet, &header(5).0, &View, &Ifs);
        assert_eq!(r[0].body, [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 3]);
        assert_eq!(r[0].body.len() + 2, Msg::ConfGetReply.size());
    }
}

"""kp's binary API driven by the standard client, vpp_papi from PyPI.

Usage: kp_api_test.py <api socket> <apidir> file|bootstrap
Configures a Service end to end, dumps it back field by field, checks every
error retval, and deletes it. Exits non-zero (with the reason) on any
mismatch. Run by tests/vpp_api.rs against a VPP started with kp.
"""

import ipaddress
import sys

from vpp_papi import VPPApiClient

# VPP error codes kp.api documents.
INVALID_SW_IF_INDEX = -2
NO_SUCH_ENTRY = -6
INVALID_VALUE = -7
ADDRESS_LENGTH_MISMATCH = -59
INVALID_ARGUMENT = -73
INVALID_ADDRESS_FAMILY = -97
ADDRESS_IN_USE = -105
ENTRY_ALREADY_EXISTS = -116
INVALID_PROTOCOL = -153
FEATURE_ALREADY_DISABLED = -169
FEATURE_ALREADY_ENABLED = -170

TCP, UDP, BOTH = 6, 17, 255
NAT_AUTO, NAT44, NAT66, NAT46, NAT64 = range(5)


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)


def main():
    sock, apidir, mode = sys.argv[1:4]
    if mode == "bootstrap":
        vpp = VPPApiClient(server_address=sock, bootstrapapi=True)
    else:
        vpp = VPPApiClient(apidir=apidir, server_address=sock)
    vpp.connect("kp-api-test")
    api = vpp.api
    for name in ("kp_conf", "kp_add_del_vip", "kp_add_del_pod", "kp_vip_dump", "kp_pod_dump",
                 "kp_set_interface_nat", "kp_conf_get", "kp_interface_nat_dump"):
        check(hasattr(api, name), f"{mode}: vpp_papi has no {name} (name/CRC mismatch?)")

    def rv(reply, want, what):
        check(reply.retval == want, f"{what}: retval {reply.retval}, want {want}")

    # Configuration.
    rv(api.kp_conf(flow_buckets=4096, flow_timeout=30), 0, "kp_conf")
    c = api.kp_conf_get()
    check((c.flow_buckets, c.flow_timeout) == (4096, 30), f"kp_conf_get {c}")
    rv(api.kp_conf(flow_buckets=1000), INVALID_VALUE, "buckets 1000")
    rv(api.kp_conf(flow_timeout=0), INVALID_VALUE, "timeout 0")
    c = api.kp_conf_get()
    check((c.flow_buckets, c.flow_timeout) == (4096, 30), "rejected kp_conf changed nothing")
    rv(api.kp_conf(flow_timeout=40), 0, "kp_conf keeps buckets")
    check(api.kp_conf_get().flow_buckets == 4096, "reserved value keeps the current buckets")

    # Two Services: IPv4 TCP with a NodePort, IPv6 UDP+TCP.
    v4 = ipaddress.ip_network("192.0.2.10/32")
    v6 = ipaddress.ip_network("2001:db8::/120")
    rv(api.kp_add_del_vip(prefix=v4, protocol=TCP, port=80, target_port=8080, node_port=30080,
                          nat_type=NAT_AUTO, new_len=1024), 0, "add v4 VIP")
    rv(api.kp_add_del_vip(prefix=v6, port=443, target_port=8443, nat_type=NAT66, new_len=4099), 0,
       "add v6 VIP")
    pods4 = [("203.0.113.1", 1), ("203.0.113.2", 3)]
    pods6 = [("2001:db8:b::1", 1), ("2001:db8:b::2", 1), ("2001:db8:b::3", 2)]
    for a, w in pods4:
        rv(api.kp_add_del_pod(vip_prefix=v4, protocol=TCP, port=80, pod_address=a, weight=w), 0, f"pod {a}")
    for a, w in pods6:
        rv(api.kp_add_del_pod(vip_prefix=v6, pod_address=a, weight=w), 0, f"pod {a}")

    vips = api.kp_vip_dump()
    check(len(vips) == 2, f"two VIPs, got {len(vips)}")
    d4, d6 = vips
    check(str(d4.prefix) == "192.0.2.10/32", f"prefix {d4.prefix}")
    check((d4.protocol, d4.port, d4.target_port, d4.node_port) == (TCP, 80, 8080, 30080),
          f"v4 ports {d4}")
    check((d4.nat_type, d4.new_len, d4.n_pods) == (NAT44, 1024, 2), f"v4 nat/new_len/pods {d4}")
    check(str(d6.prefix) == "2001:db8::/120", f"prefix {d6.prefix}")
    check((d6.protocol, d6.port, d6.target_port, d6.node_port) == (BOTH, 443, 8443, 0), f"v6 {d6}")
    check((d6.nat_type, d6.new_len, d6.n_pods) == (NAT66, 4099, 3), f"v6 nat/new_len/pods {d6}")
    check(d4.vip_index != d6.vip_index, "distinct VIP indices")

    # Filters.
    only6 = api.kp_vip_dump(filter_by_prefix=True, prefix=ipaddress.ip_network("2001:db8::/32"))
    check([str(v.prefix) for v in only6] == ["2001:db8::/120"], f"prefix filter {only6}")
    none = api.kp_vip_dump(filter_by_prefix=True, prefix=ipaddress.ip_network("192.168.0.0/16"))
    check(none == [], f"filter matching nothing {none}")

    p4 = api.kp_pod_dump(vip_prefix=v4, protocol=TCP, port=80)
    got = [(str(p.pod_address), p.weight, p.new_flow_entries, p.is_draining) for p in p4]
    check(got == [("203.0.113.1", 1, 256, False), ("203.0.113.2", 3, 768, False)], f"v4 pods {got}")
    check(all(p.vip_index == d4.vip_index and str(p.vip_prefix) == "192.0.2.10/32" and p.port == 80
              and p.protocol == TCP for p in p4), f"v4 pod VIP fields {p4}")
    p6 = api.kp_pod_dump(vip_prefix=v6)
    got = [(str(p.pod_address), p.weight, p.new_flow_entries) for p in p6]
    check(got == [("2001:db8:b::1", 1, 1025), ("2001:db8:b::2", 1, 1025), ("2001:db8:b::3", 2, 2049)], f"v6 pods {got}")
    check(api.kp_pod_dump(vip_prefix=v4, port=81) == [], "pod dump of an unknown port is empty")

    # Every error, each with its retval; none changes anything.
    def state():
        # Everything but the per-request context.
        dumps = (api.kp_vip_dump(), api.kp_pod_dump(vip_prefix=v4), api.kp_pod_dump(vip_prefix=v6))
        return [[d._replace(context=0) for d in dump] for dump in dumps]

    before = state()
    errors = [
        (lambda: api.kp_add_del_vip(prefix=v4, protocol=TCP, port=80, target_port=1), ENTRY_ALREADY_EXISTS),
        (lambda: api.kp_add_del_vip(prefix=v4, protocol=BOTH, port=80, target_port=1), ENTRY_ALREADY_EXISTS),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", port=80, target_port=1, node_port=30080),
         ADDRESS_IN_USE),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", port=80, target_port=1, new_len=1000),
         INVALID_VALUE),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", port=0, target_port=1), INVALID_VALUE),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", port=80, target_port=0), INVALID_VALUE),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", port=80, target_port=1, nat_type=NAT66),
         INVALID_ADDRESS_FAMILY),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.11/32", protocol=1, port=80, target_port=1),
         INVALID_PROTOCOL),
        (lambda: api.kp_add_del_vip(prefix="0.0.0.0/0", port=80, target_port=1), ADDRESS_LENGTH_MISMATCH),
        (lambda: api.kp_add_del_vip(prefix="192.0.2.99/32", port=80, is_del=True), NO_SUCH_ENTRY),
        (lambda: api.kp_add_del_pod(vip_prefix=v4, pod_address="2001:db8:b::9"), INVALID_ADDRESS_FAMILY),
        (lambda: api.kp_add_del_pod(vip_prefix=v4, pod_address="203.0.113.9", weight=2000000), INVALID_VALUE),
        (lambda: api.kp_add_del_pod(vip_prefix=v4, pod_address="203.0.113.9", is_del=True), NO_SUCH_ENTRY),
        (lambda: api.kp_add_del_pod(vip_prefix=v4, pod_address="203.0.113.1", is_flush=True), INVALID_ARGUMENT),
        (lambda: api.kp_add_del_pod(vip_prefix="192.0.2.199/32", pod_address="203.0.113.9"), NO_SUCH_ENTRY),
        (lambda: api.kp_set_interface_nat(sw_if_index=12345, family=0, is_add=True), INVALID_SW_IF_INDEX),
        (lambda: api.kp_set_interface_nat(sw_if_index=0, family=0, is_add=False), FEATURE_ALREADY_DISABLED),
    ]
    for call, want in errors:
        rv(call(), want, f"error case {want}")
    after = state()
    check(before == after, f"rejected requests changed nothing:\n{before}\n{after}")

    # Interfaces (local0 is sw_if_index 0).
    rv(api.kp_set_interface_nat(sw_if_index=0, family=1, is_add=True), 0, "enable nat6 on local0")
    rv(api.kp_set_interface_nat(sw_if_index=0, family=1, is_add=True), FEATURE_ALREADY_ENABLED, "twice")
    ifs = api.kp_interface_nat_dump()
    check([(i.sw_if_index, i.family) for i in ifs] == [(0, 1)], f"interface dump {ifs}")
    rv(api.kp_set_interface_nat(sw_if_index=0, family=1, is_add=False), 0, "disable")

    # Delete: pod with flush, then everything.
    rv(api.kp_add_del_pod(vip_prefix=v6, pod_address="2001:db8:b::3", is_del=True, is_flush=True), 0, "del flush")
    check(len(api.kp_pod_dump(vip_prefix=v6)) == 2, "flushed pod gone")
    rv(api.kp_add_del_vip(prefix=v4, protocol=TCP, port=80, is_del=True), 0, "del v4 VIP")
    rv(api.kp_add_del_vip(prefix=v6, port=443, is_del=True), 0, "del v6 VIP")
    check(api.kp_vip_dump() == [], "no VIPs left")
    vpp.disconnect()
    print(f"OK ({mode})")


if __name__ == "__main__":
    main()

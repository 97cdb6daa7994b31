"""Hostile binary-API input: every kp request with random field values, and
raw kp messages truncated or oversized, sent through VPP's API socket.

Usage: kp_api_hostile.py <api socket> <apidir> <messages> <seed>
Starts from a small configuration. After every message: VPP still answers;
a request that got an error reply (or none) changed nothing (VIPs, pods,
flow and nat46/nat64 settings, interfaces, all dumped back). Prints one
summary line; exits non-zero with the reason on any violation. Run by
tests/vpp_api.rs against a VPP started with kp.
"""

import collections
import ipaddress
import random
import struct
import sys

from vpp_papi import VPPApiClient

# Requests that answer with one retval; and the dumps (details, then the
# end is found with a control_ping).
SETTERS = ["kp_conf", "kp_xlat_set", "kp_add_del_vip", "kp_add_del_pod", "kp_set_interface_nat"]
GETTERS = ["kp_conf_get", "kp_xlat_get"]
DUMPS = ["kp_vip_dump", "kp_pod_dump", "kp_interface_nat_dump"]


def fail(what):
    raise SystemExit("FAILED: " + what)


def main():
    sock, apidir, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    vpp = VPPApiClient(apidir=apidir, server_address=sock)
    vpp.connect("kp-api-hostile")
    api = vpp.api
    v4 = ipaddress.ip_network("192.0.2.10/32")
    v6 = ipaddress.ip_network("2001:db8::10/128")
    api.kp_add_del_vip(prefix=v4, protocol=6, port=80, target_port=8080, node_port=30080, new_len=1024)
    api.kp_add_del_vip(prefix=v6, port=443, target_port=8443, new_len=1024)
    api.kp_add_del_pod(vip_prefix=v4, protocol=6, port=80, pod_address="198.51.100.1", weight=1)
    api.kp_add_del_pod(vip_prefix=v6, port=443, pod_address="2001:db8:b::1", weight=1)

    def state():
        def strip(x):
            return x._replace(context=0)

        vips = [strip(v) for v in api.kp_vip_dump()]
        pods = [strip(p) for v in vips for p in api.kp_pod_dump(vip_prefix=v.prefix)]
        return (strip(api.kp_conf_get()), strip(api.kp_xlat_get()), vips, pods,
                [strip(i) for i in api.kp_interface_nat_dump()])

    def msg_id(name):
        m = vpp.messages[name]
        return vpp.transport.get_msg_index(f"{name}_{m.crc[2:]}")

    # A valid request of each kind, to mutate.
    valid = {
        "kp_conf": dict(flow_buckets=4096, flow_timeout=40, flow_embryonic_timeout=5),
        "kp_xlat_set": dict(set_nat46_prefix=True, nat46_prefix="2001:db8:46::/96", set_nat64_pool=True,
                            nat64_first_port=1024, nat64_last_port=65535, n_nat64_sources=1,
                            nat64_sources=["192.0.2.64"] + ["0.0.0.0"] * 63),
        "kp_add_del_vip": dict(prefix="192.0.2.11/32", protocol=17, port=53, target_port=5353,
                               node_port=30053, nat_type=0, new_len=1024),
        "kp_add_del_pod": dict(vip_prefix=v4, protocol=6, port=80, pod_address="198.51.100.2", weight=1),
        "kp_set_interface_nat": dict(sw_if_index=0, family=0, is_add=True),
        "kp_vip_dump": dict(filter_by_prefix=True, prefix="192.0.2.0/24"),
        "kp_pod_dump": dict(vip_prefix=v4, protocol=6, port=80),
    }

    def template(name):
        """A valid message, packed; its length is the message's size."""
        m = vpp.messages[name]
        args = {"_vl_msg_id": msg_id(name), "client_index": vpp.transport.socket_index, "context": 0}
        args.update(valid.get(name, {}))
        return bytearray(m.pack(args))

    templates = {n: template(n) for n in SETTERS + GETTERS + DUMPS}
    reply_ids = {}
    for n in SETTERS + GETTERS:
        reply_ids[n] = msg_id(n + "_reply")
    ping = vpp.messages["control_ping"]
    ping_id = msg_id("control_ping")
    ping_reply_id = msg_id("control_ping_reply")

    def read_until(context, want_ids, timeout=2.0):
        """Raw replies (id, retval) with `context` until one of `want_ids`."""
        got = []
        while True:
            r = vpp.transport.read(timeout)
            if r is None:
                return got, False
            rid, ctx = struct.unpack_from(">HI", r, 0)
            if ctx != context:
                continue
            retval = struct.unpack_from(">i", r, 6)[0] if len(r) >= 10 else None
            got.append((rid, retval))
            if rid in want_ids:
                return got, True

    def send(buf, context):
        struct.pack_into(">I", buf, 6, context)
        vpp.transport.write(bytes(buf))

    stats = collections.Counter()
    baseline = state()
    context = 0x4b500000
    for k in range(count):
        name = rnd.choice(SETTERS + SETTERS + GETTERS + DUMPS)
        t = templates[name]
        size = len(t)
        shape = rnd.random()
        if shape < 0.5:
            # Random field values: every byte after the header.
            buf = t[:10] + bytearray(rnd.getrandbits(8) for _ in range(size - 10))
            kind = "random"
        elif shape < 0.8:
            # A valid message with a few bytes changed.
            buf = bytearray(t)
            for _ in range(rnd.randint(1, 4)):
                if size > 10:
                    buf[rnd.randrange(10, size)] = rnd.getrandbits(8)
            kind = "mutated"
        elif shape < 0.9 and size > 10:
            # Shorter than the message: VPP's own length check drops it
            # before any handler runs (no reply).
            buf = bytearray(t[:rnd.randrange(10, size)])
            kind = "truncated"
        else:
            buf = bytearray(t) + bytearray(rnd.getrandbits(8) for _ in range(rnd.randint(1, 256)))
            kind = "oversized"
        context += 1
        send(buf, context)
        if name in DUMPS:
            # The end of a dump: a control_ping after it.
            pbuf = bytearray(ping.pack({"_vl_msg_id": ping_id, "client_index": vpp.transport.socket_index,
                                        "context": context}))
            send(pbuf, context)
            got, ok = read_until(context, {ping_reply_id})
            if not ok:
                fail(f"message {k}: no control_ping reply after a {kind} {name}")
            stats[f"{name} {kind}: {len(got) - 1} details"] += 0
            stats["dump"] += 1
            continue
        got, ok = read_until(context, {reply_ids[name]}, timeout=1.0)
        retval = got[-1][1] if ok else None
        if retval is None:
            stats[f"{kind}: no reply"] += 1
        elif retval < 0:
            stats[f"{kind}: error reply"] += 1
        else:
            stats[f"{kind}: accepted"] += 1
        now = state()
        if retval is None or retval < 0:
            if now != baseline:
                fail(f"message {k}: {kind} {name} ({bytes(buf).hex()}) got {retval} but changed "
                     f"the configuration:\n{baseline}\n{now}")
        baseline = now
        if k % 100 == 0:
            # VPP still up and answering a plain request.
            if api.show_version().retval != 0:
                fail("show_version failed")
    vpp.disconnect()
    summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if v)
    print(f"OK: {count} messages: {summary}")


if __name__ == "__main__":
    main()

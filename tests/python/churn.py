"""Configuration churn against a VPP carrying kp traffic, and the check of
what the traffic did meanwhile. Run by tests/vpp_churn.rs.

Usage:
  churn.py changes <cli sock> <vppctl> <api sock> <apidir> <n> <seed> <out.json>
      Makes <n> configuration changes, alternately through the CLI (vppctl)
      and the binary API (vpp_papi): pods added, re-weighted and deleted on
      the Service that carries the traffic (192.0.2.10 udp/80), original
      pods deleted without flush (their flows must stay on them), other
      Services added and deleted with their pods, `kp conf` flow-table
      resizes and timeout changes. Every change must be accepted. Writes
      what it did to <out.json>.
  churn.py flows <pcap>
      Prints {"packets": n, "flows": distinct flows} as JSON for the UDP
      packets in a pg capture (Ethernet, IPv4).
  churn.py compare <reference.pcap> <pcap> <deleted.json>
      Prints, as JSON, how many flows of the capture went to another pod
      than in the reference, how many flows are missing, and how many of
      the flows of pods deleted without flush kept their pod.
"""

import json
import random
import struct
import subprocess
import sys
from collections import Counter

VIP = "192.0.2.10/32"
ORIGINAL_PODS = [f"203.0.113.{i}" for i in range(1, 17)]
# Pods added and deleted on the traffic VIP during the churn.
EXTRA_PODS = [f"203.0.113.{i}" for i in range(100, 160)]
# Services that come and go, with pods of their own.
CHURN_VIPS = [f"192.0.2.{i}" for i in range(100, 140)]
CHURN_VIP_PODS = [f"203.0.113.{i}" for i in range(200, 240)]
BUCKETS = (1 << 21, 1 << 22)
UDP = 17


def fail(what):
    raise SystemExit("FAILED: " + what)


def prefix(addr, length=32):
    import ipaddress
    return ipaddress.ip_network(f"{addr}/{length}")


def changes(cli_sock, vppctl, api_sock, apidir, n, seed, out_json):
    from vpp_papi import VPPApiClient

    # A resize of a loaded table holds VPP's barrier for seconds (new
    # tables faulted in, an unfinished earlier drain completed): longer
    # than vpp_papi's default 5 s wait for a reply.
    vpp = VPPApiClient(apidir=apidir, server_address=api_sock, read_timeout=60)
    vpp.connect("kp-churn")
    api = vpp.api
    r = random.Random(seed)

    def cli(cmd):
        p = subprocess.run([vppctl, "-s", cli_sock, cmd], capture_output=True, text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        if out:
            fail(f"{cmd}: {out}")

    def ok(reply, what):
        if reply.retval != 0:
            fail(f"{what}: retval {reply.retval}")

    extra = set()  # extra pods now on the traffic VIP
    weights = {p: 1 for p in ORIGINAL_PODS}
    deleted_originals = []
    vips = {}  # churn VIP -> its pods
    buckets = BUCKETS[0]
    done = Counter()

    def add_pod(vip, addr, weight, via_api):
        if via_api:
            ok(api.kp_add_del_pod(vip_prefix=prefix(vip.split("/")[0]), protocol=UDP, port=80,
                                  pod_address=addr, weight=weight), f"add pod {addr}")
        else:
            cli(f"kp pod {vip} {addr} weight {weight}")

    def del_pod(vip, addr, via_api):
        if via_api:
            ok(api.kp_add_del_pod(vip_prefix=prefix(vip.split("/")[0]), protocol=UDP, port=80,
                                  pod_address=addr, is_del=True), f"del pod {addr}")
        else:
            cli(f"kp pod {vip} {addr} del")

    for k in range(n):
        via_api = k % 2 == 1
        how = "api" if via_api else "cli"
        live_originals = [p for p in ORIGINAL_PODS if p not in deleted_originals]
        # (Resizes and timeouts alternate between the CLI and the API.)
        if k % 100 == 50 + (k // 100) % 2:
            # A flow-table resize, to the other size (both hold all flows).
            buckets = BUCKETS[1] if buckets == BUCKETS[0] else BUCKETS[0]
            if via_api:
                ok(api.kp_conf(flow_buckets=buckets), "kp_conf buckets")
            else:
                cli(f"kp conf buckets {buckets}")
            done[f"resize ({how})"] += 1
            continue
        if k % 100 == 75 + (k // 100) % 2:
            timeout = r.choice((600, 900))
            if via_api:
                ok(api.kp_conf(flow_timeout=timeout), "kp_conf timeout")
            else:
                cli(f"kp conf timeout {timeout}")
            done[f"timeout ({how})"] += 1
            continue
        kind = r.choices(["add-pod", "del-pod", "reweight", "del-original", "vip-add", "vip-del"],
                         [20, 15, 25, 1, 20, 19])[0]
        if kind == "add-pod" and len(extra) < len(EXTRA_PODS):
            addr = r.choice([p for p in EXTRA_PODS if p not in extra])
            add_pod(VIP, addr, r.randint(1, 100), via_api)
            extra.add(addr)
        elif kind == "del-pod" and extra:
            addr = r.choice(sorted(extra))
            del_pod(VIP, addr, via_api)
            extra.discard(addr)
        elif kind == "reweight":
            addr = r.choice(live_originals + sorted(extra))
            w = r.randint(1, 100)
            add_pod(VIP, addr, w, via_api)
            weights[addr] = w
        elif kind == "del-original" and len(live_originals) > 8:
            addr = r.choice(live_originals)
            del_pod(VIP, addr, via_api)
            deleted_originals.append(addr)
        elif kind == "vip-add" and len(vips) < len(CHURN_VIPS):
            v = r.choice([x for x in CHURN_VIPS if x not in vips])
            pods = r.sample(CHURN_VIP_PODS, r.randint(1, 8))
            new_len = r.choice((1024, 4096, 16384))
            if via_api:
                ok(api.kp_add_del_vip(prefix=prefix(v), protocol=UDP, port=80, target_port=8080,
                                      new_len=new_len), f"add vip {v}")
                for p in pods:
                    add_pod(f"{v}/32", p, 1, True)
            else:
                cli(f"kp vip {v}/32 protocol udp port 80 target_port 8080 new_len {new_len}")
                cli(f"kp pod {v}/32 " + " ".join(pods))
            vips[v] = pods
        elif kind == "vip-del" and vips:
            v = r.choice(sorted(vips))
            if via_api:
                ok(api.kp_add_del_vip(prefix=prefix(v), protocol=UDP, port=80, is_del=True), f"del vip {v}")
            else:
                cli(f"kp vip {v}/32 protocol udp port 80 del")
            del vips[v]
        else:
            # Nothing of this kind to do now: a re-weight instead.
            addr = r.choice(live_originals)
            add_pod(VIP, addr, r.randint(1, 100), via_api)
            kind = "reweight"
        done[f"{kind} ({how})"] += 1

    # Back to where the churn started: no extra pods or churn Services,
    # the first table size; deleted originals stay deleted (draining).
    for addr in sorted(extra):
        del_pod(VIP, addr, False)
        done["del-pod (cli)"] += 1
    for v in sorted(vips):
        cli(f"kp vip {v}/32 protocol udp port 80 del")
        done["vip-del (cli)"] += 1
    if buckets != BUCKETS[0]:
        cli(f"kp conf buckets {BUCKETS[0]}")
        done["resize (cli)"] += 1
    cli("kp conf timeout 600")
    vpp.disconnect()
    with open(out_json, "w") as f:
        json.dump({"changes": sum(done.values()), "kinds": done, "deleted_originals": deleted_originals}, f)


def flows(pcap):
    """(src address, src port) -> destination address, from a pcap."""
    out = {}
    n = 0
    with open(pcap, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return n, out
        endian = "<" if struct.unpack("<I", head[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                break
            incl = struct.unpack(endian + "IIII", rec)[2]
            pkt = f.read(incl)
            if len(pkt) < 14 + 20 + 8 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
            ihl = (ip[0] & 15) * 4
            if ip[9] != UDP:
                continue
            n += 1
            key = ip[12:16] + ip[ihl:ihl + 2]
            out[key] = ip[16:20]
    return n, out


def show(key):
    return ".".join(str(b) for b in key[:4]) + ":" + str(struct.unpack(">H", key[4:6])[0])


def compare(ref_pcap, pcap, deleted_json):
    _, ref = flows(ref_pcap)
    n, now = flows(pcap)
    deleted = set(json.load(open(deleted_json))["deleted_originals"]) if deleted_json != "-" else set()
    deleted = {bytes(int(x) for x in a.split(".")) for a in deleted}
    moved = [k for k, pod in now.items() if k in ref and ref[k] != pod]
    kept_on_deleted = sum(1 for k, pod in now.items() if ref.get(k) == pod and pod in deleted)
    print(json.dumps({
        "packets": n,
        "flows": len(now),
        "reference_flows": len(ref),
        "missing": sum(1 for k in ref if k not in now),
        "moved": len(moved),
        "moved_sample": [f"{show(k)} {'.'.join(map(str, ref[k]))} -> {'.'.join(map(str, now[k]))}"
                         for k in moved[:5]],
        "flows_of_deleted_pods_kept": kept_on_deleted,
        "pods": len(set(now.values())),
    }))


def main():
    mode = sys.argv[1]
    if mode == "changes":
        cli_sock, vppctl, api_sock, apidir, n, seed, out_json = sys.argv[2:9]
        changes(cli_sock, vppctl, api_sock, apidir, int(n), int(seed), out_json)
    elif mode == "flows":
        n, f = flows(sys.argv[2])
        print(json.dumps({"packets": n, "flows": len(f)}))
    elif mode == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

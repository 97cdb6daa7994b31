"""Packet making and decoding for kp's VPP data-path tests, with scapy
(an independent decoder: nothing here shares code with kp).

  pg_tool.py make <out.pcap> <spec.json>
      spec: {"dst_mac": ..., "packets": [[family, proto, src, dst, sport, dport], ...]}
  pg_tool.py decode <in.pcap>
      one JSON object per packet: addresses, ports, protocol, and whether
      the IPv4 header checksum and the TCP/UDP checksum verify.
"""

import json
import sys

from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, rdpcap, wrpcap


def make(out, spec_file):
    spec = json.load(open(spec_file))
    pkts = []
    for family, proto, src, dst, sport, dport in spec["packets"]:
        ip = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
        l4 = TCP(sport=sport, dport=dport, flags="PA") if proto == "tcp" else UDP(sport=sport, dport=dport)
        pkts.append(Ether(dst=spec["dst_mac"], src="02:00:00:00:00:01") / ip / l4 / Raw(b"kp-test-payload"))
    wrpcap(out, pkts)


def l4_ok(ip, l4cls):
    l4 = ip[l4cls]
    got = l4.chksum
    if l4cls is UDP and got == 0 and ip.version == 4:
        return True
    clone = ip.copy()
    del clone[l4cls].chksum
    want = type(ip)(bytes(clone))[l4cls].chksum
    return got == want


def decode(pcap):
    for p in rdpcap(pcap):
        # VPP's own control traffic on the interface (ND, RA) is not ours.
        if (IP not in p and IPv6 not in p) or (TCP not in p and UDP not in p):
            continue
        ip = p[IP] if IP in p else p[IPv6]
        l4cls = TCP if TCP in ip else UDP
        d = {
            "family": 4 if ip.version == 4 else 6,
            "proto": "tcp" if l4cls is TCP else "udp",
            "src": ip.src,
            "dst": ip.dst,
            "sport": ip[l4cls].sport,
            "dport": ip[l4cls].dport,
            "l4_ok": l4_ok(ip, l4cls),
            "ip_ok": True,
        }
        if ip.version == 4:
            clone = ip.copy()
            del clone.chksum
            d["ip_ok"] = IP(bytes(clone)).chksum == ip.chksum
        print(json.dumps(d))


if __name__ == "__main__":
    {"make": make, "decode": decode}[sys.argv[1]](*sys.argv[2:])

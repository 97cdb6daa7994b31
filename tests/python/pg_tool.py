"""Packet making and decoding for kp's VPP data-path tests, with scapy
(an independent decoder: nothing here shares code with kp).

  pg_tool.py make <out.pcap> <spec.json>
      spec: {"dst_mac": ..., "packets": [[family, proto, src, dst, sport, dport], ...]}
      (a packet may instead be a string: a scapy expression for the IP
      layer on, for what the list form cannot say: ICMP errors, extension
      headers)
  pg_tool.py hostile <out.pcap> <spec.json>
      spec: {"dst_mac", "good": [[family, proto, src, dst, sport, dport], ...],
      "bad": n, "seed": s}: the good packets, in order, with n hostile ones
      (random bytes, truncated headers, lying IHL and lengths, TCP data
      offset below 5, zero-length UDP, endless IPv6 extension chains,
      overlapping and never-ending fragments, flipped bits) mixed in. Each
      hostile one keeps its template's destination address.
  pg_tool.py decode <in.pcap>
      one JSON object per packet: addresses, ports, protocol, and whether
      the IPv4 header checksum and the TCP/UDP checksum verify.
"""

import json
import sys

from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6PacketTooBig, IPerror, IPerror6, IPv6,
                       IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                       Raw, TCPerror, UDPerror, defragment6, defrag, fragment, fragment6, rdpcap,
                       wrpcap)


def make(out, spec_file):
    spec = json.load(open(spec_file))
    pkts = []
    for entry in spec["packets"]:
        if isinstance(entry, str):
            made = eval(entry)
            # (An expression may make several packets: fragments.)
            for m in made if isinstance(made, list) else [made]:
                pkts.append(Ether(dst=spec["dst_mac"], src="02:00:00:00:00:01") / m)
            continue
        family, proto, src, dst, sport, dport = entry
        ip = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
        l4 = TCP(sport=sport, dport=dport, flags="PA") if proto == "tcp" else UDP(sport=sport, dport=dport)
        pkts.append(Ether(dst=spec["dst_mac"], src="02:00:00:00:00:01") / ip / l4 / Raw(b"kp-test-payload"))
    wrpcap(out, pkts)


def good_packet(entry, payload=b"kp-test-payload"):
    family, proto, src, dst, sport, dport = entry
    ip = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    l4 = TCP(sport=sport, dport=dport, flags="PA") if proto == "tcp" else UDP(sport=sport, dport=dport)
    return ip / l4 / Raw(payload)


def hostile_packet(rnd, template):
    """One hostile packet made from a good one (an IP layer on)."""
    raw = bytearray(bytes(template))
    v4 = template.version == 4
    dst = slice(16, 20) if v4 else slice(24, 40)
    kind = rnd.randrange(9)
    if kind == 0:  # random bytes behind a plausible version nibble
        b = bytearray(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 120)))
        b[0] = (b[0] & 0x0F) | ((4 if v4 else 6) << 4)
        return bytes(b)
    if kind == 1:  # truncated anywhere in the headers
        return bytes(raw[:rnd.randrange(1, 60)])
    if kind == 2 and v4:  # IHL that lies
        raw[0] = 0x40 | rnd.randrange(16)
        return bytes(raw)
    if kind == 3:  # total / payload length that lies
        at = 2 if v4 else 4
        raw[at:at + 2] = rnd.randrange(65536).to_bytes(2, "big")
        return bytes(raw)
    if kind == 4 and TCP in template:  # TCP data offset below 5
        p = template.copy()
        p[TCP].dataofs = rnd.randrange(5)
        return bytes(p)
    if kind == 5 and UDP in template:  # zero-length (or lying) UDP
        p = template.copy()
        p[UDP].len = rnd.choice([0, 1, 7, 8, 65535])
        return bytes(p)
    if kind == 6 and not v4:  # an endless extension-header chain
        ext = IPv6ExtHdrDestOpt()
        for _ in range(rnd.randrange(10, 60)):
            ext = ext / IPv6ExtHdrDestOpt()
        ip = template.copy()
        return bytes(IPv6(src=ip.src, dst=ip.dst) / ext / ip.payload)
    if kind == 7:  # fragments: overlapping, or never ending
        ip = template.copy()
        big = ip / Raw(bytes(rnd.getrandbits(8) for _ in range(600)))
        frags = fragment(big, fragsize=128) if v4 else fragment6(
            IPv6(src=ip.src, dst=ip.dst) / IPv6ExtHdrFragment(id=rnd.getrandbits(32)) / ip.payload / Raw(b"x" * 600), 200)
        pick = frags[rnd.randrange(len(frags))]
        b = bytearray(bytes(pick))
        if v4:
            b[6] |= 0x20  # more fragments, always
            b[7] = rnd.getrandbits(8)  # and an offset that overlaps
        return bytes(b)
    # Flipped bits anywhere but the destination address.
    for _ in range(rnd.randrange(1, 6)):
        at = rnd.randrange(len(raw))
        if dst.start <= at < dst.stop:
            continue
        raw[at] ^= 1 << rnd.randrange(8)
    return bytes(raw)


def hostile(out, spec_file):
    import random
    spec = json.load(open(spec_file))
    rnd = random.Random(spec["seed"])
    good = [good_packet(e) for e in spec["good"]]
    eth = lambda b: Ether(dst=spec["dst_mac"], src="02:00:00:00:00:01", type=0x0800 if b[0] >> 4 == 4 else 0x86DD) / Raw(b)
    n_bad = spec["bad"]
    pkts = []
    for i, g in enumerate(good):
        pkts.append(Ether(dst=spec["dst_mac"], src="02:00:00:00:00:01") / g)
        for _ in range(n_bad // max(len(good), 1)):
            pkts.append(eth(hostile_packet(rnd, good[rnd.randrange(len(good))])))
    wrpcap(out, pkts)
    print(len(pkts))


def l4_ok(ip, l4cls):
    l4 = ip[l4cls]
    got = l4.chksum
    if l4cls is UDP and got == 0 and ip.version == 4:
        return True
    clone = ip.copy()
    del clone[l4cls].chksum
    want = type(ip)(bytes(clone))[l4cls].chksum
    return got == want


def checksum_ok(layer, field="chksum"):
    """Whether a layer's checksum is what scapy computes afresh."""
    top = layer.firstlayer().copy()
    mine = top[type(layer)]
    got = getattr(mine, field)
    delattr(mine, field)
    rebuilt = type(top)(bytes(top))
    return getattr(rebuilt[type(layer)], field) == got


def decode_icmp(p):
    """An ICMP error: outer and quoted addresses and ports, and whether
    every checksum (outer IPv4, ICMP, quoted IPv4) verifies."""
    ip = p[IP] if IP in p else p[IPv6]
    if ip.version == 4:
        icmp, inner = ip[ICMP], ip[IPerror]
        ok = checksum_ok(ip) and checksum_ok(icmp) and checksum_ok(inner)
    else:
        icmp, inner = ip[ICMPv6PacketTooBig], ip[IPerror6]
        ok = checksum_ok(icmp, "cksum")
    q = inner[TCPerror] if TCPerror in inner else inner[UDPerror]
    return {"icmp": True, "src": ip.src, "dst": ip.dst, "inner_src": inner.src, "inner_dst": inner.dst,
            "inner_sport": q.sport, "inner_dport": q.dport, "ok": ok}


def reassemble(pcap):
    """Reassembles the fragments in a capture (scapy's own reassembly) and
    decodes the datagrams, as `decode` does, plus how many fragments each
    had and whether they all carried the same addresses."""
    # (Sorted by offset: a host reassembles in any order, scapy's
    # reassembly wants them in order.)
    frags4 = sorted((p[IP] for p in rdpcap(pcap) if IP in p), key=lambda f: (f.id, f.frag))
    frags6 = sorted((p[IPv6] for p in rdpcap(pcap) if IPv6 in p and IPv6ExtHdrFragment in p),
                    key=lambda f: (f[IPv6ExtHdrFragment].id, f[IPv6ExtHdrFragment].offset))
    out = []
    if frags4:
        # (defrag: packets that were not fragments, reassembled ones, and
        # fragments it could not reassemble.)
        _, whole, _ = defrag(frags4)
        out += [IP(bytes(d)) for d in whole]
    if frags6:
        out.append(IPv6(bytes(defragment6(frags6))))
    for ip in out:
        l4cls = TCP if TCP in ip else UDP
        d = {"family": ip.version, "src": ip.src, "dst": ip.dst, "sport": ip[l4cls].sport,
             "dport": ip[l4cls].dport, "l4_ok": l4_ok(ip, l4cls), "len": len(ip),
             "fragments": len(frags4) if ip.version == 4 else len(frags6),
             "same_dst": len({f.dst for f in (frags4 if ip.version == 4 else frags6)}) == 1}
        print(json.dumps(d))


def decode(pcap):
    for p in rdpcap(pcap):
        if (IP in p and ICMP in p and IPerror in p) or ICMPv6PacketTooBig in p:
            print(json.dumps(decode_icmp(p)))
            continue
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
    {"make": make, "decode": decode, "reassemble": reassemble, "hostile": hostile}[sys.argv[1]](*sys.argv[2:])

#!/usr/bin/env python3
"""Generate the l4lb demo inputs: maps.txt, packets/*.hex and expected.json.

Stdlib only. The demo configuration (VIPs, reals, rings, egress slots) lives in
CONFIG below; maps.txt is written from it, and the expected results are
computed by a Python model of l4lb.bpf.c (same flow hash, same lookups), so
the three files always agree. Run from anywhere:

    python3 examples/l4lb/make_packets.py
"""
import ipaddress
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Constants mirrored from l4lb.bpf.c.
RING_SIZE = 4
MAX_VIPS = 16
F_IPV6 = 1
CTL_SLOTS = 2
TC_ACT = {0: "TC_ACT_OK", 2: "TC_ACT_SHOT", 7: "TC_ACT_REDIRECT"}
DROP_NO_REAL, DROP_NO_CTL = 0, 1
TCP, UDP = 6, 17

CONFIG = {
    # (address, port, proto) -> vip_num
    "vips": [
        ("10.0.0.10", 80, TCP, 1, "IPv4 VIP, web, balanced to the IPv4 real"),
        ("2001:db8::10", 80, TCP, 2, "IPv6 VIP, web, balanced to the IPv6 real"),
        ("10.0.0.20", 80, TCP, 3, "IPv4 VIP whose only real has ctl_pos 7 (misconfigured)"),
        ("10.0.0.10", 53, UDP, 4, "IPv4 VIP, DNS over UDP, balanced to the IPv6 real"),
    ],
    # real index -> (address, ctl_pos)
    "reals": {
        1: ("172.16.0.1", 0),
        2: ("2001:db8:ff::2", 1),
        3: ("172.16.0.3", 7),
    },
    # vip_num -> real index for every ring slot of that VIP
    "rings": {1: 1, 2: 2, 3: 3, 4: 2},
    # ctl_array slot -> (ifindex, next-hop MAC)
    "ctl": {0: (2, "02:00:00:00:0a:01"), 1: (3, "02:00:00:00:0a:02")},
}

CLIENT_MAC = "02:00:00:00:00:02"
LB_MAC = "02:00:00:00:00:01"


# ---------------------------------------------------------------- packets
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def eth(ethertype):
    return mac(LB_MAC) + mac(CLIENT_MAC) + struct.pack("!H", ethertype)


def l4(proto, src, dst, sport, dport, payload, pseudo_tail):
    """TCP (SYN, or PSH|ACK with payload) or UDP header + payload, checksummed."""
    if proto == TCP:
        flags = 0x18 if payload else 0x02
        hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0 if flags == 2 else 1,
                          5 << 4, flags, 64240, 0, 0)
        off = 16
    else:
        hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        off = 6
    seg = hdr + payload
    c = csum(src + dst + pseudo_tail(len(seg)) + seg)
    if proto == UDP and c == 0:
        c = 0xFFFF
    return seg[:off] + struct.pack("!H", c) + seg[off + 2:]


def ipv4_packet(src, dst, proto, sport, dport, payload=b"", l4_override=None):
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    seg = l4(proto, s, d, sport, dport, payload,
             lambda n: struct.pack("!BBH", 0, proto, n))
    if l4_override is not None:
        seg = l4_override(seg)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0x1234, 0x4000, 64,
                      proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return eth(0x0800) + hdr + seg


def ipv6_packet(src, dst, proto, sport, dport, payload=b""):
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    seg = l4(proto, s, d, sport, dport, payload,
             lambda n: struct.pack("!I3xB", n, proto))
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(seg), proto, 64, s, d)
    return eth(0x86DD) + hdr + seg


# ------------------------------------------------- model of l4lb.bpf.c
def flow_hash(src16, is_ipv6, sport):
    """flow_hash() of l4lb.bpf.c: u32 words loaded little-endian (x86 guest)."""
    w = [int.from_bytes(src16[i:i + 4], "little") for i in range(0, 16, 4)]
    h = w[0]
    if is_ipv6:
        h ^= w[1] ^ w[2] ^ w[3]
    h ^= int.from_bytes(struct.pack("!H", sport), "little")
    h ^= h >> 16
    h = (h * 0x45D9F3B) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def model(pkt):
    """Return (retval, details) the way l4lb_ingress handles pkt."""
    res = {"path": None}
    ethertype = struct.unpack("!H", pkt[12:14])[0]
    if ethertype == 0x0800 and len(pkt) >= 34:
        ihl = (pkt[14] & 0xF) * 4
        proto, src, dst = pkt[23], pkt[26:30] + bytes(12), pkt[30:34]
        l4off, is_ipv6 = 14 + ihl, False
    elif ethertype == 0x86DD and len(pkt) >= 54:
        proto, src, dst = pkt[20], pkt[22:38], pkt[38:54]
        l4off, is_ipv6 = 54, True
    else:
        res["path"] = "not IP: pass"
        return 0, res
    if proto not in (TCP, UDP):
        res["path"] = "not TCP/UDP: pass"
        return 0, res
    if len(pkt) < l4off + 4:
        res["path"] = "truncated L4 header (bounds check): pass"
        return 0, res
    sport, dport = struct.unpack("!HH", pkt[l4off:l4off + 4])
    vip = None
    for addr, port, p, num, _ in CONFIG["vips"]:
        if ipaddress.ip_address(addr).packed == dst and port == dport and p == proto:
            vip = num
    if vip is None:
        res["path"] = "no VIP for (dst, dport, proto): pass"
        return 0, res
    h = flow_hash(src, is_ipv6, sport)
    slot = vip * RING_SIZE + h % RING_SIZE
    real = CONFIG["rings"].get(vip, 0)
    res.update(vip_num=vip, hash=h, ring_slot=slot, real=real)
    addr, ctl_pos = CONFIG["reals"][real]
    v6_real = ipaddress.ip_address(addr).version == 6
    res["tunnel"] = {"remote": addr, "family": "ipv6" if v6_real else "ipv4",
                     "flags": "BPF_F_TUNINFO_IPV6" if v6_real else "0",
                     "tunnel_id": vip, "ttl": 64}
    if v6_real:
        res["tunnel"]["remote_ipv6_words"] = list(
            struct.unpack("<4I", ipaddress.IPv6Address(addr).packed))
    else:
        res["tunnel"]["remote_ipv4_host_order"] = int(ipaddress.IPv4Address(addr))
    res["ctl_pos"] = ctl_pos
    if ctl_pos >= CTL_SLOTS:
        res["path"] = "VIP -> real %d with ctl_pos %d: ctl_array miss: drop" % (real, ctl_pos)
        res["drops"] = {str(DROP_NO_CTL): 1}
        res["stats"] = {"index": vip, "packets": 0, "bytes": 0}
        return 2, res
    ifindex, nh_mac = CONFIG["ctl"][ctl_pos]
    res["path"] = "VIP %d -> real %d (%s) -> ctl slot %d: redirect" % (
        vip, real, res["tunnel"]["family"], ctl_pos)
    res["stats"] = {"index": vip, "packets": 1, "bytes": len(pkt)}
    res["redirect_ifindex"] = ifindex
    res["data_out_dst_mac"] = nh_mac
    return 7, res


# ---------------------------------------------------------------- outputs
def packets():
    http = b"GET / HTTP/1.0\r\n\r\n"
    dns = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    return [
        ("ipv4_to_v4real", "IPv4 TCP client -> IPv4 VIP 10.0.0.10:80",
         ipv4_packet("192.0.2.1", "10.0.0.10", TCP, 40000, 80, http)),
        ("ipv6_to_v6real", "IPv6 TCP SYN -> IPv6 VIP [2001:db8::10]:80",
         ipv6_packet("2001:db8:1::1", "2001:db8::10", TCP, 40001, 80)),
        ("ipv4_novip", "IPv4 TCP SYN to 10.0.0.99:80, not a VIP",
         ipv4_packet("192.0.2.1", "10.0.0.99", TCP, 40002, 80)),
        ("ctl_lookup_fail", "IPv4 TCP SYN -> VIP 10.0.0.20:80 whose real has ctl_pos 7",
         ipv4_packet("192.0.2.1", "10.0.0.20", TCP, 40003, 80)),
        ("ipv4_udp_to_v6real", "IPv4 UDP DNS query -> VIP 10.0.0.10:53/udp, IPv6 real",
         ipv4_packet("192.0.2.7", "10.0.0.10", UDP, 5353, 53, dns)),
        ("ipv4_vip_wrong_proto", "IPv4 UDP to 10.0.0.10:80: address and port of a VIP, "
         "but the VIP is TCP (proto is part of the key)",
         ipv4_packet("192.0.2.1", "10.0.0.10", UDP, 40004, 80, b"x")),
        ("ipv4_truncated", "IPv4 TCP to the VIP 10.0.0.10:80 cut 2 bytes into the TCP "
         "header: the L4 bounds check fails",
         ipv4_packet("192.0.2.1", "10.0.0.10", TCP, 40005, 80)[:14 + 20 + 2]),
    ]


def hexdump(name, desc, pkt):
    lines = ["# %s: %s" % (name, desc), "# %d bytes, generated by make_packets.py" % len(pkt)]
    for i in range(0, len(pkt), 16):
        lines.append(" ".join("%02x" % b for b in pkt[i:i + 16]))
    return "\n".join(lines) + "\n"


def maps_txt():
    out = ["# l4lb demo map contents (generated by make_packets.py; edit CONFIG there).",
           "# Format: MAPNAME KEY=VALUE; IPv4/IPv6 literals are network order,",
           "# integers into __be16/__be32 fields are stored big-endian.", "",
           "# vip_map: (address, port, proto) -> vip_num"]
    for addr, port, proto, num, desc in CONFIG["vips"]:
        member = "v6" if ":" in addr else "v4"
        out.append("vip_map {addr: {%s: %s}, port: %d, proto: %d}={flags: 0, vip_num: %d}"
                   "  # %s" % (member, addr, port, proto, num, desc))
    out += ["", "# reals: index -> address; flags 1 = F_IPV6; ctl_pos = ctl_array slot"]
    for idx, (addr, ctl_pos) in sorted(CONFIG["reals"].items()):
        if ":" in addr:
            out.append("reals %d={dstv6: %s, flags: %d, ctl_pos: %d}" % (idx, addr, F_IPV6, ctl_pos))
        else:
            out.append("reals %d={dst: %s, flags: 0, ctl_pos: %d}%s" % (
                idx, addr, ctl_pos, "  # misconfigured: no such slot" if ctl_pos >= CTL_SLOTS else ""))
    out += ["", "# ch_rings: vip_num * %d + hash %% %d -> real index (every slot of a VIP)"
            % (RING_SIZE, RING_SIZE)]
    for vip, real in sorted(CONFIG["rings"].items()):
        for i in range(RING_SIZE):
            out.append("ch_rings %d=%d" % (vip * RING_SIZE + i, real))
    out += ["", "# ctl_array: slot 0 = IPv4 egress, slot 1 = IPv6 egress"]
    for slot, (ifindex, m) in sorted(CONFIG["ctl"].items()):
        out.append("ctl_array %d={ifindex: %d, mac: x:%s}" % (slot, ifindex, m.replace(":", "")))
    return "\n".join(out) + "\n"


def main():
    os.makedirs(os.path.join(HERE, "packets"), exist_ok=True)
    expected = {
        "program": "l4lb_ingress", "section": "tc", "object": "l4lb.bpf.o",
        "maps": "maps.txt",
        "note": "each packet run once, alone, on freshly loaded maps; "
                "stats/drops are the map entries afterwards",
        "packets": {},
    }
    for name, desc, pkt in packets():
        with open(os.path.join(HERE, "packets", name + ".hex"), "w") as f:
            f.write(hexdump(name, desc, pkt))
        retval, res = model(pkt)
        entry = {"file": "packets/%s.hex" % name, "description": desc, "length": len(pkt),
                 "retval": retval, "retval_name": TC_ACT[retval]}
        entry.update(res)
        entry.setdefault("stats", None)            # null: no VIP, stats untouched
        entry.setdefault("drops", {})              # drops index (reason) -> count
        entry.setdefault("data_out_dst_mac", None)  # null: frame unchanged
        expected["packets"][name] = entry
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    with open(os.path.join(HERE, "maps.txt"), "w") as f:
        f.write(maps_txt())


if __name__ == "__main__":
    main()

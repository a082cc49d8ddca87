#!/usr/bin/env python3
"""Write tests/progs/expected.json: per program, the documented inputs (hex)
and the exact return values, computed here by small Python models of the C
programs (so a change to a program must be mirrored here). The values were
checked against the kernel with `bpftool prog run` (BPF_PROG_TEST_RUN).

Stdlib only:  python3 tests/progs/gen_expected.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
XDP = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


def s32(v):
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def s16(v):
    v &= 0xFFFF
    return v - (1 << 16) if v >> 15 else v


def bswap(v, nbytes):
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


def cdiv(a, b):
    """C (truncating) signed division; BPF: x / 0 = 0."""
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def cmod(a, b):
    """C remainder (sign of the dividend); BPF: x % 0 = x."""
    return a if b == 0 else a - cdiv(a, b) * b


def fold16(v):
    while v >> 16:
        v = (v >> 16) + (v & 0xFFFF)
    return v


# ------------------------------------------------------------------ calls
def calls_model(pkt):
    s = sum(pkt[:16])
    fold = 0 if len(pkt) < 17 else (s * 3 + pkt[16]) & M32
    weight = len(pkt) // 4 + 1
    return (fold + weight) & M32


# -------------------------------------------------------------------- alu
def alu_input(a, d, n, shift, port):
    return struct.pack("!IIiBxH16x", a, d, n, shift, port)


def alu_model(pkt):
    a, d, n, shift, port = struct.unpack("!IIiBxH", pkt[:16])
    sh = shift & 31
    r1 = ((a + d * 3) ^ (a << sh)) & M32
    r2 = ((a >> sh) - (~d & M32)) & M32
    r3 = (n >> sh) & M32                       # arithmetic shift
    q = a // d if d else 0
    m = r1 % d if d else r1
    sq = cdiv(n, s32(d)) & M32                 # sdiv32 via magnitudes
    sm = cmod(s32(n * 7), s32(d)) & M32
    sw = bswap(r1, 4) ^ bswap(port, 2)
    at = 100 + 105 + 121 + 7 + 7 + 4 + 4 + 1000 + 1024
    return fold16((r1 + r2 + r3 + q + m + sq + sm + sw + at) & M32)


# ----------------------------------------------------------------- alu_v4
def alu_v4_input(b, h, w, dd):
    return struct.pack("<bxhiq16x", b, h, w, dd)


def alu_v4_model(pkt):
    b, h, w, dd = struct.unpack("<bxhiq", pkt[:16])
    q64 = cdiv(w, dd)
    m64 = cmod(h, dd)
    q32 = s32(cdiv(w, b))
    m32 = cmod(h, b)
    mx = s16(q32)
    sw = ((bswap(q64, 2) + bswap(m32, 4)) & M32) + bswap(mx, 8)
    total = (q64 + m64 + q32 + m32 + mx + sw) & M64
    total = (total >> 32) + (total & M32)
    return fold16(total)


# ------------------------------------------------------------------- maps
def maps_input():
    return (bytes.fromhex("020000000001" "020000000002" "0800") + bytes(range(14, 60)))


def maps_data_out(pkt):
    return pkt[6:12] + pkt[0:6] + pkt[12:]


# ----------------------------------------------------------------- socket
def ipv4_udp(payload_len, tot_len=None):
    udp = struct.pack("!HHHH", 1234, 53, 8 + payload_len, 0) + bytes(payload_len)
    tl = 20 + len(udp) if tot_len is None else tot_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tl, 1, 0, 64, 17, 0,
                     bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    return bytes.fromhex("020000000001020000000002" "0800") + ip + udp


def ipv6_udp(payload_len):
    udp = struct.pack("!HHHH", 1234, 53, 8 + payload_len, 0) + bytes(payload_len)
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64,
                     bytes.fromhex("20010db8000000000000000000000001"),
                     bytes.fromhex("20010db8000000000000000000000002"))
    return bytes.fromhex("020000000001020000000002" "86dd") + ip + udp


def socket_model(frame):
    ip = frame[14:]                            # test_run pulls the Ethernet header
    if len(ip) < 20:
        return 0
    if ip[0] >> 4 != 4:
        return len(ip)
    return struct.unpack("!H", ip[2:4])[0]


# ------------------------------------------------------------------ output
# ----------------------------------------------------------------- privstack
def privstack_ctx(*args):
    return struct.pack("<6Q", *args)


def privstack_model(ctx):
    args = [(a + 1) & M64 for a in struct.unpack("<6Q", ctx)]
    words = [j * 3 for j in range(4)]
    return s32(0x51 + sum(args) + sum(w * 2 for w in words))


def case(name, pkt, retval, names=None, **extra):
    c = {"name": name, "input_hex": pkt.hex(), "retval": retval}
    if names and retval in names:
        c["retval_name"] = names[retval]
    c.update(extra)
    return c


def main():
    calls_in = bytes(range(64))
    alu_in = alu_input(0x12345678, 7, -100, 5, 8080)
    alu_in0 = alu_input(0x12345678, 0, -100, 5, 8080)
    v4_in = alu_v4_input(-3, -1234, -100000, 7)
    v4_in0 = alu_v4_input(0, -1234, -100000, 7)
    mp = maps_input()
    priv_in = privstack_ctx(1, 2, 3, 4, 5, 6)
    priv_in2 = privstack_ctx(M64, 1 << 40, 0, 7, M64 - 5, 1 << 63)
    out = {
        "_doc": "program -> inputs (hex of data_in) -> exact BPF_PROG_TEST_RUN retval; "
                "generated by gen_expected.py, objects built by the Makefile",
        "calls": {
            "object": "calls.bpf.o", "program": "calls_main", "section": "xdp",
            "subprograms": ["fold", "weight", "sum_bytes", "mix", "scale"],
            "cases": [
                case("bytes_0_to_63", calls_in, calls_model(calls_in)),
                case("zero_14", bytes(14), calls_model(bytes(14))),
            ],
        },
        "alu": {
            "object": "alu.bpf.o", "program": "alu_main", "section": "xdp", "cpu": "v3",
            "cases": [
                case("a=0x12345678,d=7,n=-100,shift=5,port=8080", alu_in, alu_model(alu_in)),
                case("same,d=0 (patched div/mod by zero)", alu_in0, alu_model(alu_in0)),
            ],
        },
        "alu_v4": {
            "object": "alu_v4.bpf.o", "program": "alu_v4_main", "section": "xdp", "cpu": "v4",
            "min_kernel": "6.6 (6.1 rejects it)",
            "cases": [
                case("b=-3,h=-1234,w=-100000,dd=7", v4_in, alu_v4_model(v4_in)),
                case("same,b=0 (patched sdiv/smod by zero)", v4_in0, alu_v4_model(v4_in0)),
            ],
        },
        "maps": {
            "object": "maps.bpf.o", "program": "maps_main", "section": "xdp",
            "cases": [
                case("eth_60", mp, 3, XDP, data_out_hex=maps_data_out(mp).hex(),
                     maps_after_one_run={
                         "pkt_stats": {"2": {"packets": 1, "bytes": len(mp)}},
                         "mac_seen": {"02:00:00:00:00:02": 1},
                         "bss_packets": 1}),
            ],
        },
        "socket": {
            "object": "socket.bpf.o", "program": "socket_len", "section": "socket",
            "cases": [
                case("ipv4_udp_62", ipv4_udp(20), socket_model(ipv4_udp(20))),
                case("ipv4_tot_len_1500", ipv4_udp(20, 1500), socket_model(ipv4_udp(20, 1500))),
                case("ipv6_udp_74", ipv6_udp(12), socket_model(ipv6_udp(12))),
            ],
        },
        "privstack": {
            "object": "privstack.bpf.o", "program": "privstack_main", "section": "raw_tp",
            "subprograms": ["fold"], "private_stack_from": "6.13 (main: 96 bytes of stack)",
            "cases": [
                case("args_1_to_6", b"", privstack_model(priv_in), ctx_hex=priv_in.hex()),
                case("args_wrapping", b"", privstack_model(priv_in2), ctx_hex=priv_in2.hex()),
            ],
        },
        "reject": {
            "object": "reject.bpf.o", "program": "reject_main", "section": "xdp",
            "load_fails": True, "errno": -13,
            "verifier_error": "invalid access to packet, off=23 size=1",
            "source_line": "return iph->protocol;", "line": 29, "insn": 6,
        },
    }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

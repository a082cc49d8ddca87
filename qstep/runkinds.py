"""What a test run's input and output are for each program type: a packet, a
context (raw tracepoint arguments, a syscall program's struct), the flow keys a flow
dissector fills, or a packet the kernel hands over from its network header."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from qstep.agent.replies import RunResult
from qstep.bpf.progtypes import CTX_PROG_TYPES, ETH_HLEN
from qstep.bpf.uapi import ProgType
from qstep.render import packet_diff

# struct bpf_flow_keys (uapi): nhoff, thoff, addr_proto, is_frag, is_first_frag,
# is_encap, ip_proto, n_proto (be), sport (be), dport (be), a 32-byte address union,
# flags, flow_label (be): 56 bytes.
FLOW_KEYS = struct.Struct("<HHHBBBB2s2s2s32sI4s")
FROM_NETWORK_HEADER = frozenset({ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB,
                                 ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT})
# struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
XDP_MD = struct.Struct("<6I")
XDP_LINEAR_MAX = 3000  # frames BPF_PROG_TEST_RUN keeps in one buffer (no fragments)
L3_NOTE = ("(BPF_PROG_TEST_RUN hands this program type the frame from its network header "
           "on and clears the output's Ethernet header)")


def xdp_md_in(prog_type: int, data: bytes) -> bytes:
    """The context qstep hands an XDP run so that the kernel reports, in the context
    after it, where the frame starts after metadata the program reserved
    (bpf_xdp_adjust_meta); empty for other types and for fragmented frames."""
    if prog_type != ProgType.XDP or not ETH_HLEN <= len(data) <= XDP_LINEAR_MAX:
        return b""
    return XDP_MD.pack(0, len(data), 0, 0, 0, 0)


def xdp_metadata_len(prog_type: int, result: RunResult) -> int:
    """Bytes of metadata in front of an XDP run's output frame (0 when unknown)."""
    if prog_type != ProgType.XDP or len(result.ctx_out) < XDP_MD.size:
        return 0
    meta = XDP_MD.unpack_from(result.ctx_out)[0]
    return meta if meta <= len(result.data_out) else 0


def input_word(prog_type: int) -> str:
    """'context' for programs run on a context alone, else 'packet'."""
    return "context" if prog_type in CTX_PROG_TYPES else "packet"


def flow_keys(data: bytes) -> dict[str, int | str]:
    """The flow keys a flow dissector's run returns, by field (addresses and ports as
    the program stored them, in network order)."""
    if len(data) < FLOW_KEYS.size:
        return {}
    (nhoff, thoff, addr_proto, is_frag, first, encap, ip_proto, n_proto, sport, dport,
     addrs, flags, label) = FLOW_KEYS.unpack_from(data)
    keys: dict[str, int | str] = {
        "nhoff": nhoff, "thoff": thoff, "addr_proto": addr_proto, "is_frag": is_frag,
        "is_first_frag": first, "is_encap": encap, "ip_proto": ip_proto,
        "n_proto": int.from_bytes(n_proto, "big"), "sport": int.from_bytes(sport, "big"),
        "dport": int.from_bytes(dport, "big")}
    if addr_proto == 0x86DD:
        keys["ipv6_src"] = str(ipaddress.IPv6Address(addrs[:16]))
        keys["ipv6_dst"] = str(ipaddress.IPv6Address(addrs[16:]))
    else:
        keys["ipv4_src"] = str(ipaddress.IPv4Address(addrs[:4]))
        keys["ipv4_dst"] = str(ipaddress.IPv4Address(addrs[4:8]))
    keys["flags"] = flags
    keys["flow_label"] = int.from_bytes(label, "big")
    return keys


def flow_keys_text(data: bytes) -> str:
    """``{nhoff: 14, thoff: 34, ...}`` (hex when the output is shorter than the keys)."""
    keys = flow_keys(data)
    if not keys:
        return f"x:{data.hex()}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in keys.items()) + "}"


def run_extras(prog_type: int, result: RunResult) -> dict[str, Any]:
    """JSON of a context run's context after it, or of a flow dissector's keys."""
    if prog_type in CTX_PROG_TYPES:
        return {"ctx_out": result.ctx_out.hex()}
    if prog_type == ProgType.FLOW_DISSECTOR:
        return {"flow_keys": flow_keys(result.data_out)}
    meta = xdp_metadata_len(prog_type, result)
    if meta:  # packet_out is the frame; the metadata in front of it comes apart
        return {"metadata_out": result.data_out[:meta].hex(),
                "packet_out": result.data_out[meta:].hex()}
    return {}


DURATION_LIMIT_NS = 0xFFFFFFFF  # BPF_PROG_TEST_RUN's duration is a u32: it saturates there


def duration_text(ns: int) -> str:
    """A run's duration as the kernel reported it (its u32 saturates after ~4.29 s)."""
    return (f"at least {ns} ns (the kernel's 32-bit limit)" if ns >= DURATION_LIMIT_NS
            else f"{ns} ns")


def outcome_text(prog_type: int, packet: bytes, result: RunResult,
                 repeat: int | None = None) -> list[str]:
    """What the run gave back besides its return value, as the program type has it
    (``repeat``: a duration line; the debugger's runs have none)."""
    if prog_type in CTX_PROG_TYPES:  # no duration: the kernel measures none
        return ["context out: " + "\n  ".join(packet_diff(packet, result.ctx_out))]
    lines = ([f"duration  {duration_text(result.duration_ns)} per run (repeat {repeat})"]
             if repeat is not None else [])
    if prog_type == ProgType.FLOW_DISSECTOR:
        return [*lines, f"flow keys {flow_keys_text(result.data_out)}"]
    meta = xdp_metadata_len(prog_type, result)
    if meta:
        lines.append(f"metadata  {meta} bytes in front of the frame: "
                     f"{result.data_out[:meta].hex(' ')}")
    lines.append("packet out: " + "\n  ".join(packet_diff(packet, result.data_out[meta:])))
    return lines + ([f"  {L3_NOTE}"] if prog_type in FROM_NETWORK_HEADER else [])

"""Program types and the names of their return values."""

from __future__ import annotations

from qstep.bpf.uapi import ProgType

PROG_TYPE_NAMES: dict[int, str] = {int(t): t.name.lower() for t in ProgType}

XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_ACTIONS = {-1: "TC_ACT_UNSPEC", 0: "TC_ACT_OK", 1: "TC_ACT_RECLASSIFY", 2: "TC_ACT_SHOT",
              3: "TC_ACT_PIPE", 4: "TC_ACT_STOLEN", 5: "TC_ACT_QUEUED", 6: "TC_ACT_REPEAT",
              7: "TC_ACT_REDIRECT"}
CGROUP_SKB = {0: "drop", 1: "allow"}

# Program types BPF_PROG_TEST_RUN can run with a packet.
PACKET_PROG_TYPES = frozenset({
    ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP,
    ProgType.CGROUP_SKB, ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT, ProgType.SK_SKB,
    ProgType.FLOW_DISSECTOR})

# Program types BPF_PROG_TEST_RUN runs on a context alone (no packet, no repeat):
# the raw tracepoint's u64 arguments, the syscall program's own struct (which the
# kernel copies back after the run). qstep's packet input is their context.
CTX_PROG_TYPES = frozenset({ProgType.RAW_TRACEPOINT, ProgType.SYSCALL})
RUNNABLE_PROG_TYPES = PACKET_PROG_TYPES | CTX_PROG_TYPES



def run_refusal(name: str, prog_type: int) -> str | None:
    """Why qstep does not test-run ``name`` (None when it does): BPF_PROG_TEST_RUN either
    refuses its type or, for tracing programs, calls the traced kernel function and
    runs the program only if attached, so a run would show nothing of the program."""
    if prog_type in RUNNABLE_PROG_TYPES:
        return None
    return (f"{name} is a {prog_type_name(prog_type)} program; qstep runs packet programs "
            "(xdp, tc/sched_cls, socket filter, cgroup_skb, lwt, flow dissector) and, with "
            "the context as --packet, raw_tracepoint and syscall programs (disasm shows "
            "this one)")


# BPF_PROG_TEST_RUN's packet sizes: at least an Ethernet header; skb-based types
# build the skb in one 4096-byte page less 64 bytes of headroom and 320 of
# skb_shared_info (measured on x86-64 6.1 and 6.12: 3712 runs, 3713 is EINVAL).
# XDP takes larger packets (as fragments).
ETH_HLEN = 14
SKB_MAX_PACKET = 3712
SKB_PROG_TYPES = frozenset({
    ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.CGROUP_SKB,
    ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT})
# libbpf section names (the part before '/') of the packet program types.
SECTION_TYPES = {
    "xdp": ProgType.XDP, "xdp.frags": ProgType.XDP, "tc": ProgType.SCHED_CLS,
    "tcx": ProgType.SCHED_CLS, "classifier": ProgType.SCHED_CLS,
    "action": ProgType.SCHED_ACT, "socket": ProgType.SOCKET_FILTER,
    "cgroup_skb": ProgType.CGROUP_SKB, "lwt_in": ProgType.LWT_IN,
    "lwt_out": ProgType.LWT_OUT, "lwt_xmit": ProgType.LWT_XMIT}


def section_prog_type(section: str) -> int | None:
    """The packet program type libbpf gives a section name, if it is one."""
    kind = SECTION_TYPES.get(section.split("/")[0])
    return int(kind) if kind is not None else None


def packet_size_problem(prog_type: int, size: int) -> str | None:
    """Why BPF_PROG_TEST_RUN refuses a ``size``-byte packet for this type (None if it
    takes it)."""
    if prog_type not in PACKET_PROG_TYPES:
        return None
    if size < ETH_HLEN:
        return (f"a {size}-byte packet is too short: BPF_PROG_TEST_RUN needs at least an "
                f"Ethernet header ({ETH_HLEN} bytes)")
    if prog_type in SKB_PROG_TYPES and size > SKB_MAX_PACKET:
        return (f"a {size}-byte packet is too long for a {prog_type_name(prog_type)} program: "
                "BPF_PROG_TEST_RUN builds its skb in one 4096-byte page less headroom and "
                f"skb_shared_info, at most {SKB_MAX_PACKET} bytes (XDP takes larger ones)")
    return None


def prog_type_name(prog_type: int) -> str:
    return PROG_TYPE_NAMES.get(prog_type, f"type{prog_type}")


def retval_name(prog_type: int, retval: int) -> str | None:
    """Symbolic name of a return value, or None when the type gives none."""
    signed = retval - (1 << 32) if retval >= 1 << 31 else retval
    if prog_type == ProgType.XDP:
        return XDP_ACTIONS.get(signed)
    if prog_type in (ProgType.SCHED_CLS, ProgType.SCHED_ACT):
        return TC_ACTIONS.get(signed)
    if prog_type == ProgType.CGROUP_SKB:
        return CGROUP_SKB.get(signed)
    if prog_type == ProgType.FLOW_DISSECTOR:
        return {0: "BPF_OK", 2: "BPF_DROP"}.get(signed)
    if prog_type == ProgType.SOCKET_FILTER:
        return "drop" if signed == 0 else f"keep {signed} bytes"
    return None

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
    if prog_type == ProgType.SOCKET_FILTER:
        return "drop" if signed == 0 else f"keep {signed} bytes"
    return None

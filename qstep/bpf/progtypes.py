"""Program types and the names of their return values."""

from __future__ import annotations

PROG_TYPE_NAMES = {
    0: "unspec", 1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act",
    5: "tracepoint", 6: "xdp", 7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock",
    10: "lwt_in", 11: "lwt_out", 12: "lwt_xmit", 13: "sock_ops", 14: "sk_skb",
    15: "cgroup_device", 16: "sk_msg", 17: "raw_tracepoint", 18: "cgroup_sock_addr",
    19: "lwt_seg6local", 20: "lirc_mode2", 21: "sk_reuseport", 22: "flow_dissector",
    23: "cgroup_sysctl", 24: "raw_tracepoint_writable", 25: "cgroup_sockopt",
    26: "tracing", 27: "struct_ops", 28: "ext", 29: "lsm", 30: "sk_lookup", 31: "syscall",
    32: "netfilter",
}

XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_ACTIONS = {-1: "TC_ACT_UNSPEC", 0: "TC_ACT_OK", 1: "TC_ACT_RECLASSIFY", 2: "TC_ACT_SHOT",
              3: "TC_ACT_PIPE", 4: "TC_ACT_STOLEN", 5: "TC_ACT_QUEUED", 6: "TC_ACT_REPEAT",
              7: "TC_ACT_REDIRECT"}
CGROUP_SKB = {0: "drop", 1: "allow"}

# Program types BPF_PROG_TEST_RUN can run with a packet.
PACKET_PROG_TYPES = {1, 3, 4, 6, 8, 10, 11, 12, 14, 22}


def prog_type_name(prog_type: int) -> str:
    return PROG_TYPE_NAMES.get(prog_type, f"type{prog_type}")


def retval_name(prog_type: int, retval: int) -> str | None:
    """Symbolic name of a return value, or None when the type gives none."""
    signed = retval - (1 << 32) if retval >= 1 << 31 else retval
    if prog_type == 6:
        return XDP_ACTIONS.get(signed)
    if prog_type in (3, 4):
        return TC_ACTIONS.get(signed)
    if prog_type == 8:
        return CGROUP_SKB.get(signed)
    if prog_type == 1:
        return "drop" if signed == 0 else f"keep {signed} bytes"
    return None

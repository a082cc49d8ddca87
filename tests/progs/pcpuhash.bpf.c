// SPDX-License-Identifier: GPL-2.0
/* pcpuhash.bpf.c - per-CPU hash maps with 4-byte keys (the per-CPU pointer sits
 * right after the key, not 8-aligned), read by the debugger while stopped.
 *
 * On any frame of >= 14 bytes: by_proto[0x0800] = {runs 1, len LEN} in a PERCPU_HASH
 * and recent[7] = LEN * 3 in an LRU_PERCPU_HASH (LEN: the frame length).
 * Returns XDP_PASS (2); shorter frames XDP_ABORTED (0).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct counts {
	__u64 runs;
	__u32 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct counts);
} by_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} recent SEC(".maps");

SEC("xdp")
int pcpuhash_main(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 proto = 0x0800, slot = 7;
	struct counts c = {.runs = 1, .len = len};
	__u64 tripled = (__u64)len * 3;

	if (len < 14)
		return XDP_ABORTED;
	bpf_map_update_elem(&by_proto, &proto, &c, BPF_ANY);
	bpf_map_update_elem(&recent, &slot, &tripled, BPF_ANY);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* deadcode.bpf.c - code the verifier removes (XDP).
 *
 * `verbose` lives in .rodata, which libbpf freezes before the load, so the
 * verifier knows it is 0: the branch at the `if` is hard-wired and the block
 * under it (lines 24-25) is dead code that a privileged load removes.
 * Returns XDP_PASS (2) for any packet.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile int verbose = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("xdp")
int dead_main(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count;

	if (verbose > 1) {
		bpf_printk("packet of %d bytes", ctx->data_end - ctx->data);
		return XDP_DROP;
	}
	count = bpf_map_lookup_elem(&seen, &zero);
	if (count)
		*count += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* entryval.bpf.c - argument registers that a call clobbers, callee-saved registers
 * across bpf-to-bpf calls (tests/vm/test_entry_values.py).
 *
 * mix() gets a, b, c in r1-r3; its map lookup clobbers r1-r5, so afterwards a, b, c
 * are only where the code kept them: b in a callee-saved register of mix (it is used
 * later); a and c (x = a * 3 + c is computed before the lookup, whose key depends on
 * it) only where the caller kept what it passed, if it did.
 * Across the second call the caller keeps keep and sum in r6-r9 (mix pushes the
 * ones it uses itself: the JIT's saves) and res on its stack.
 *
 * Input: any packet of at least 4 bytes; p, q, r are its bytes 0, 1 and 2, keep is
 * byte 3 times 5, sum = p + q. Result: XDP_PASS or XDP_DROP (the low bit).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __noinline __u64 mix(__u64 a, __u64 b, __u64 c)
{
	__u64 x = a * 3 + c;
	__u32 k = x & 3;
	__u64 *v = bpf_map_lookup_elem(&seen, &k);

	if (v)
		*v += b;
	x ^= b << 4; /* AFTER_LOOKUP */
	return x + b;
}

SEC("xdp")
int entryval(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u64 p, q, r, keep, sum, res;

	if (data + 4 > end)
		return XDP_ABORTED;
	p = data[0];
	q = data[1];
	r = data[2];
	keep = data[3] * 5;
	sum = p + q;
	res = mix(p, q, r);
	res += mix(q, keep, sum); /* SECOND_CALL */
	return ((res ^ p) + (keep ^ sum) + (q << 3)) & 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

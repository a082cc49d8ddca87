// SPDX-License-Identifier: GPL-2.0
/* calls.bpf.c - bpf-to-bpf calls two levels deep and a bounded loop (XDP).
 *
 * Call graph (every callee is a real BPF_PSEUDO_CALL, noinline):
 *   calls_main ─┬─ fold (level 1) ─┬─ sum_bytes (level 2, bounded loop)
 *               │                  └─ mix       (level 2)
 *               └─ weight (level 1) ── scale    (level 2)
 *
 * Documented input (tests/progs/expected.json, "calls"): 64 bytes, byte i = i.
 *   sum_bytes(data, end, 16) = 0+1+...+15        = 120
 *   mix(120, data[16] = 16)  = 120 * 3 + 16      = 376   -> fold()   = 376
 *   scale(64)                = 64 / 4 + 1        = 17    -> weight() = 17
 *   calls_main returns 376 + 17                  = 393
 * Input of 14 bytes (all zero): sum_bytes stops at the end of the packet
 * (sum 0), fold() sees no byte 16 and returns 0, weight = 14/4+1 = 4 -> 4.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SUM_LEN 16

/* Level 2: bounded loop over packet bytes; stops early at data_end. */
static __attribute__((noinline))
__u32 sum_bytes(const __u8 *p, const void *end, int n)
{
	__u32 sum = 0;
	int i;

#pragma clang loop unroll(disable)
	for (i = 0; i < SUM_LEN; i++) {
		if (i >= n || (const void *)(p + i + 1) > end)
			break;
		sum += p[i];
	}
	return sum;
}

/* Level 2: plain arithmetic on two scalars. */
static __attribute__((noinline))
__u32 mix(__u32 acc, __u32 byte)
{
	return acc * 3 + byte;
}

/* Level 2. */
static __attribute__((noinline))
__u32 scale(__u32 len)
{
	return len / 4 + 1;
}

/* Level 1: sum the first 16 bytes, then mix in byte 16. */
static __attribute__((noinline))
__u32 fold(const __u8 *data, const void *end)
{
	__u32 s = sum_bytes(data, end, SUM_LEN);

	if ((const void *)(data + SUM_LEN + 1) > end)
		return 0;
	return mix(s, data[SUM_LEN]);
}

/* Level 1: a value derived from the packet length. */
static __attribute__((noinline))
__u32 weight(__u32 len)
{
	return scale(len);
}

SEC("xdp")
int calls_main(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const void *end = (const void *)(long)ctx->data_end;
	__u32 len = (__u32)((const __u8 *)end - data);

	return fold(data, end) + weight(len);
}

char LICENSE[] SEC("license") = "GPL";

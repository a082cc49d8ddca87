// SPDX-License-Identifier: GPL-2.0
/* alu.bpf.c - 32-bit ALU, shifts, div/mod by a packet value, byte swaps and
 * atomics (XDP). Built with -mcpu=v3 (see Makefile): v3 gives the 32-bit
 * w-register ALU, JMP32 and the atomic fetch/xchg/cmpxchg instructions
 * (kernel >= 5.12, so fine on 6.1). v3 has no signed division, so sdiv32 /
 * smod32 below are C signed division done on magnitudes with unsigned
 * div/mod (clang-19 refuses '/' on signed ints below v4; see alu_v4.bpf.c).
 *
 * The verifier patches every div/mod by a register: a zero divisor gives
 * x / 0 = 0 and x % 0 = x instead of a fault. Both cases are documented.
 *
 * Packet (struct alu_in, 32 bytes, network order):
 *   a = 0x12345678, d = 7, n = -100, shift = 5, port = 0x1f90 (8080), rest 0
 *     -> returns 7300 (0x1c84)
 *   the same with d = 0 (verifier-patched division by zero)
 *     -> returns 11547 (0x2d1b)
 * Every intermediate value is in tests/progs/gen_expected.py (alu_model),
 * which is the reference this program is checked against.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct alu_in {
	__be32 a;
	__be32 d;       /* divisor */
	__be32 n;       /* signed dividend */
	__u8 shift;
	__u8 pad;
	__be16 port;
	__u8 rest[16];
};

/* Globals for the atomics (.bss). */
struct atomic_state {
	__u64 x;        /* 64-bit fetch ops */
	__u32 y;        /* 32-bit fetch ops (w registers) */
	__u32 runs;     /* plain atomic add, result unused (not in the checksum) */
} state;

static __always_inline __s32 sdiv32(__s32 a, __s32 b)
{
	__u32 ua = a < 0 ? -(__u32)a : (__u32)a;
	__u32 ub = b < 0 ? -(__u32)b : (__u32)b;
	__u32 q = ua / ub;

	return (a < 0) != (b < 0) ? -(__s32)q : (__s32)q;
}

static __always_inline __s32 smod32(__s32 a, __s32 b)
{
	__u32 ua = a < 0 ? -(__u32)a : (__u32)a;
	__u32 ub = b < 0 ? -(__u32)b : (__u32)b;
	__u32 r = ua % ub;

	return a < 0 ? -(__s32)r : (__s32)r;   /* sign of the dividend, as C */
}

SEC("xdp")
int alu_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct alu_in *in = data;
	__u32 a, d, sh, r1, r2, q, m, sw, at, csum;
	__s32 n, r3, sq, sm;
	__u16 port;

	if ((void *)(in + 1) > data_end)
		return XDP_ABORTED;

	/* Byte swaps of non-constant values: be32 / be16 instructions. */
	a = bpf_ntohl(in->a);
	d = bpf_ntohl(in->d);
	n = (__s32)bpf_ntohl(in->n);
	port = bpf_ntohs(in->port);
	sh = in->shift & 31;

	/* 32-bit ALU and shifts by a variable amount (lsh, rsh, arsh). */
	r1 = (a + d * 3) ^ (a << sh);
	r2 = (a >> sh) - ~d;
	r3 = n >> sh;

	/* Division by a value from the packet (verifier inserts zero checks). */
	/* Different operands for div and mod, or LLVM computes the remainder as
	 * x - (x / d) * d and no mod instruction is emitted. */
	q = a / d;
	m = r1 % d;
	sq = sdiv32(n, (__s32)d);
	sm = smod32(n * 7, (__s32)d);

	sw = bpf_htonl(r1) ^ bpf_htons(port);

	/* Atomics: xchg first so the sequence is independent of earlier runs. */
	__sync_lock_test_and_set(&state.x, 100);               /* x = 100 */
	at = __sync_fetch_and_add(&state.x, 5);                /* 100, x = 105 */
	at += __sync_fetch_and_or(&state.x, 0x30);             /* 105, x = 121 */
	at += __sync_val_compare_and_swap(&state.x, 121, 7);   /* 121, x = 7 */
	at += __sync_val_compare_and_swap(&state.x, 121, 9);   /* 7 (no swap) */
	at += __sync_fetch_and_xor(&state.x, 3);               /* 7, x = 4 */
	at += __sync_fetch_and_and(&state.x, 6);               /* 4, x = 4 */
	at += (__u32)state.x;                                  /* 4 */
	__sync_lock_test_and_set(&state.y, 1000);              /* y = 1000 */
	at += __sync_fetch_and_add(&state.y, 24);              /* 1000, y = 1024 */
	at += state.y;                                         /* 1024 */
	__sync_fetch_and_add(&state.runs, 1);                  /* lock add */

	csum = r1 + r2 + (__u32)r3 + q + m + (__u32)sq + (__u32)sm + sw + at;
	csum = (csum >> 16) + (csum & 0xffff);
	csum = (csum >> 16) + (csum & 0xffff);
	return csum;
}

char LICENSE[] SEC("license") = "GPL";

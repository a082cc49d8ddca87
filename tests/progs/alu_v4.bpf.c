// SPDX-License-Identifier: GPL-2.0
/* alu_v4.bpf.c - ISA v4 instructions (XDP). Built with -mcpu=v4 (see Makefile),
 * so it needs kernel >= 6.6: loads on 6.12; 6.1 rejects it with EINVAL,
 * log "BPF_LDX uses reserved fields" (the sign-extending load). Covers what alu.bpf.c cannot:
 *   - sign-extending loads  r = *(s8 *), *(s16 *), *(s32 *)   (BPF_MEMSX)
 *   - sign-extending moves  r = (s16)w                         (BPF_MOV, off 16)
 *   - signed div/mod 64 and 32 bit  s/=, s%=                  (BPF_SDIV/SMOD, off 1)
 *   - unconditional byte swaps  bswap16/32/64                  (BPF_ALU64|BPF_END)
 *
 * Packet (struct v4_in, 32 bytes, little-endian fields):
 *   b = -3, h = -1234, w = -100000, dd = 7, rest 0   -> returns 13795 (0x35e3)
 *   the same with b = 0 (verifier-patched signed division by zero:
 *   x s/ 0 = 0, x s% 0 = x)                           -> returns 9762 (0x2622)
 * Intermediate values: tests/progs/gen_expected.py (alu_v4_model).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct v4_in {
	__s8 b;
	__u8 pad;
	__s16 h;
	__s32 w;
	__s64 dd;
	__u8 rest[16];
};

SEC("xdp")
int alu_v4_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct v4_in *in = data;
	__s64 x, y, z, dd, q64, m64, mx;
	__s32 q32, m32;
	__u64 sw, sum;

	if ((void *)(in + 1) > data_end)
		return XDP_ABORTED;

	x = in->w;              /* ldsx: *(s32 *) */
	y = in->h;              /* ldsx: *(s16 *) */
	z = in->b;              /* ldsx: *(s8 *)  */
	dd = in->dd;

	q64 = x / dd;                   /* sdiv64 */
	m64 = y % dd;                   /* smod64 */
	q32 = (__s32)x / (__s32)z;      /* sdiv32 */
	m32 = (__s32)y % (__s32)z;      /* smod32 */
	mx = (__s16)q32;                /* movsx 16 -> 64 */

	sw = __builtin_bswap16((__u16)q64) + __builtin_bswap32((__u32)m32) +
	     __builtin_bswap64((__u64)mx);

	sum = (__u64)q64 + (__u64)m64 + (__u64)(__s64)q32 + (__u64)(__s64)m32 +
	      (__u64)mx + sw;
	sum = (sum >> 32) + (sum & 0xffffffff);
	sum = (sum >> 16) + (sum & 0xffff);
	sum = (sum >> 16) + (sum & 0xffff);
	sum = (sum >> 16) + (sum & 0xffff);
	return (int)sum;
}

char LICENSE[] SEC("license") = "GPL";

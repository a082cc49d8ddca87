// SPDX-License-Identifier: GPL-2.0
/* big.bpf.c - a program whose object is over 500 KB (XDP), as programs built on
 * vmlinux.h with -g are: the types of big_types.h fill its BTF and DWARF.
 * -DBIG_COPIES=N (1..6) adds N-1 more copies of the type graph (multi-MB objects).
 *
 * Sixteen noinline stages fold the first 16 packet bytes:
 *   stage_k(acc, b) = acc * 31 + b + k   (u32), b = byte k; acc starts at the
 *   packet's length.
 * big_main stores the result in bytes 60..63 (little endian) and returns XDP_TX;
 * a packet shorter than 64 bytes is dropped (XDP_DROP) untouched.
 * Documented input (tests/vm/test_transport.py): 64 bytes, byte i = i.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "big_types.h"

#ifndef BIG_COPIES
#define BIG_COPIES 1
#endif

BIG_TYPES(t)
struct t_root *big_root_t;   /* .bss, always NULL: keeps the types in the object */
#if BIG_COPIES > 1
BIG_TYPES(u)
struct u_root *big_root_u;
#endif
#if BIG_COPIES > 2
BIG_TYPES(v)
struct v_root *big_root_v;
#endif
#if BIG_COPIES > 3
BIG_TYPES(w)
struct w_root *big_root_w;
#endif
#if BIG_COPIES > 4
BIG_TYPES(x)
struct x_root *big_root_x;
#endif
#if BIG_COPIES > 5
BIG_TYPES(y)
struct y_root *big_root_y;
#endif

#define STAGE(k) \
	static __attribute__((noinline)) __u32 stage_##k(__u32 acc, __u32 b) \
	{ \
		return acc * 31 + b + k; \
	}
STAGE(0) STAGE(1) STAGE(2) STAGE(3) STAGE(4) STAGE(5) STAGE(6) STAGE(7)
STAGE(8) STAGE(9) STAGE(10) STAGE(11) STAGE(12) STAGE(13) STAGE(14) STAGE(15)

SEC("xdp")
int big_main(struct xdp_md *ctx)
{
	__u8 *p = (__u8 *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 acc = (__u32)(end - (void *)p);

	if ((void *)(p + 64) > end)
		return XDP_DROP;
	acc = stage_0(acc, p[0]);
	acc = stage_1(acc, p[1]);
	acc = stage_2(acc, p[2]);
	acc = stage_3(acc, p[3]);
	acc = stage_4(acc, p[4]);
	acc = stage_5(acc, p[5]);
	acc = stage_6(acc, p[6]);
	acc = stage_7(acc, p[7]);
	acc = stage_8(acc, p[8]);
	acc = stage_9(acc, p[9]);
	acc = stage_10(acc, p[10]);
	acc = stage_11(acc, p[11]);
	acc = stage_12(acc, p[12]);
	acc = stage_13(acc, p[13]);
	acc = stage_14(acc, p[14]);
	acc = stage_15(acc, p[15]);
	*(__u32 *)(p + 60) = acc;
	if (big_root_t)
		return XDP_ABORTED;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* shapes.bpf.c - more source-level variable shapes for tests/vm/test_source_vars.py:
 * a stack array filled from the packet, a stack array of counters updated in a loop
 * through a masked index, a nested struct with a union and negative (signed) fields
 * filled by a __noinline function through a pointer, an inlined switch over an enum,
 * and globals in .data (a struct), .bss (an array) and .rodata (a signed constant).
 *
 * Input: 16+ bytes, byte i = 3 * i + 1. Every value follows from that (the test
 * computes them); the program returns TC_ACT_OK (0).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define NBUCKETS 8
#define NBYTES 16

struct point {
	__s32 x;
	__s32 y;
};

struct shape {
	char name[4];
	struct point a;
	struct point b;
	union {
		__u32 raw;
		struct {
			__u16 lo;
			__u16 hi;
		} half;
	} tag;
	__s16 delta;
	__u16 flags;
};

enum kind { K_SMALL = 0, K_MEDIUM = 1, K_LARGE = 2 };

struct shape last_shape = { .name = "non" };
__u64 histogram[4];
const volatile __s32 bias = -5;

static __attribute__((noinline)) __s32 spread(const __u32 *counts)
{
	__s32 acc = 0;
	int i;

#pragma clang loop unroll(disable)
	for (i = 0; i < NBUCKETS; i++)
		acc += i * counts[i];
	return acc;
}

static __attribute__((noinline)) void make_shape(struct shape *s, const __u8 *b, __s32 total)
{
	__builtin_memcpy(s->name, "shp", 4);
	s->a.x = b[0];
	s->a.y = -(__s32)b[1];
	s->b.x = total;
	s->b.y = (__s32)b[2] - 100;
	s->tag.half.lo = b[3];
	s->tag.half.hi = b[4];
	s->delta = (__s16)(b[5] - b[6] * 2);
	s->flags = 0x8001;
}

static __always_inline enum kind kind_of(__s32 total)
{
	enum kind k;

	switch (total / 100) {
	case 0:
		k = K_SMALL;
		break;
	case 1:
		k = K_MEDIUM;
		break;
	default:
		k = K_LARGE;
		break;
	}
	return k;
}

SEC("tc")
int shapes_main(struct __sk_buff *skb)
{
	__u8 bytes[NBYTES];
	__u32 counts[NBUCKETS] = {};
	struct shape s = {};
	enum kind k;
	__s32 total;
	int i;

	if (bpf_skb_load_bytes(skb, 0, bytes, sizeof(bytes)) < 0)
		return TC_ACT_SHOT;
#pragma clang loop unroll(disable)
	for (i = 0; i < NBYTES; i++)
		counts[bytes[i] & (NBUCKETS - 1)] += 1;
	total = spread(counts);
	make_shape(&s, bytes, total);
	k = kind_of(total + bias);
	histogram[k & 3] += 1;
	last_shape = s;
	return total + bias > 0 ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";

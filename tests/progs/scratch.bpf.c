// SPDX-License-Identifier: GPL-2.0
/* scratch.bpf.c - the memory shapes of tracing/networking agents (Tracee, Cilium,
 * Falco): an event assembled in a per-CPU array scratch buffer (too big for the
 * stack), a large memset/memcpy, a big struct on the stack, a call chain of three
 * static subprograms whose frames together come near the 512-byte limit, a static
 * subprogram with five arguments, a bpf_spin_lock in a map value, a bpf_timer in a
 * map value (initialised; never started), an unrolled and a rolled bounded loop.
 *
 *   scratch_main  SEC("tc"): copies the first EV_BYTES bytes of the frame into the
 *                 scratch event (bpf_skb_load_bytes), then into a 224-byte struct
 *                 on the stack (memset + memcpy), sums it down the call chain
 *                 (level1 -> level2 -> level3), and keeps totals under a spin lock.
 *                 Returns TC_ACT_OK (0), or TC_ACT_SHOT (2) for a frame shorter
 *                 than EV_BYTES.
 *
 * Documented input: 64 bytes, byte i = i + 1. Then (the test recomputes them):
 *   head_sum   = 1 + 2 + ... + 8 = 36                      (unrolled loop)
 *   nonzero    = 64                                        (rolled loop)
 *   chain      = level1(&head) = bytes 0..15 + 2 * bytes 16..31 + 3 * bytes 32..47
 *              = 136 + 2 * 392 + 3 * 648 = 2864
 *   mix        = mix5(len, nonzero, head_sum, byte 0, byte 1) = mix5(64, 64, 36, 1, 2)
 *              = 64 + 2*64 + 3*36 + 4*1 + 5*2 = 314 (values from the packet: constant
 *              arguments would let clang fold the call away)
 *   timer_rc   = 0 on a first run (bpf_timer_init)
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/time.h>
#include <bpf/bpf_helpers.h>

#define EV_BYTES 64
#define HEAD_BYTES 8

struct event {
	__u64 seq;
	__u32 len;
	__u32 nonzero;
	__u32 head_sum;
	__u32 chain;
	__u8 data[EV_BYTES];
	__u8 tail[192]; /* cleared, never written: the memset's work */
};

struct big {
	__u64 words[28]; /* 224 bytes on the stack */
};

struct totals {
	struct bpf_spin_lock lock;
	__u32 runs;
	__u64 bytes;
};

struct tick {
	struct bpf_timer timer;
	__u64 armed;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct totals);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tick);
} ticks SEC(".maps");

__u32 mix;
long timer_rc = -1;

static __noinline __u32 mix5(__u32 a, __u32 b, __u32 c, __u32 d, __u32 e)
{
	return a + b * 2 + c * 3 + d * 4 + e * 5;
}

static __noinline __u32 level3(const __u8 *bytes)
{
	__u8 local[32];
	__u32 acc = 0;
	int i;

	__builtin_memcpy(local, bytes + 32, sizeof(local));
#pragma clang loop unroll(disable)
	for (i = 0; i < 16; i++)
		acc += local[i] * 3;
	return acc;
}

static __noinline __u32 level2(const __u8 *bytes)
{
	__u8 local[32];
	__u32 acc = 0;
	int i;

	__builtin_memcpy(local, bytes + 16, sizeof(local));
#pragma clang loop unroll(disable)
	for (i = 0; i < 16; i++)
		acc += local[i] * 2;
	return acc + level3(bytes);
}

static __noinline __u32 level1(const __u8 *bytes)
{
	__u8 local[32];
	__u32 acc = 0;
	int i;

	__builtin_memcpy(local, bytes, sizeof(local));
#pragma clang loop unroll(disable)
	for (i = 0; i < 16; i++)
		acc += local[i];
	return acc + level2(bytes);
}

static int tick_cb(void *map, __u32 *key, struct tick *t)
{
	return 0;
}

SEC("tc")
int scratch_main(struct __sk_buff *skb)
{
	struct big head;
	struct event *ev;
	struct totals *tot;
	struct tick *t;
	__u32 zero = 0, sum = 0, nonzero = 0;
	int i;

	ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return TC_ACT_SHOT;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->seq = 1;
	ev->len = skb->len;
	if (bpf_skb_load_bytes(skb, 0, ev->data, EV_BYTES))
		return TC_ACT_SHOT;
	__builtin_memset(&head, 0, sizeof(head));
	__builtin_memcpy(&head, ev->data, EV_BYTES);
#pragma unroll
	for (i = 0; i < HEAD_BYTES; i++)
		sum += ((__u8 *)&head)[i];
#pragma clang loop unroll(disable)
	for (i = 0; i < EV_BYTES; i++)
		nonzero += ev->data[i] != 0;
	ev->head_sum = sum;
	ev->nonzero = nonzero;
	ev->chain = level1((const __u8 *)&head);
	mix = mix5(ev->len, nonzero, sum, ev->data[0], ev->data[1]);

	tot = bpf_map_lookup_elem(&totals, &zero);
	if (tot) {
		bpf_spin_lock(&tot->lock);
		tot->runs += 1;
		tot->bytes += ev->len;
		bpf_spin_unlock(&tot->lock);
	}
	t = bpf_map_lookup_elem(&ticks, &zero);
	if (t) {
		timer_rc = bpf_timer_init(&t->timer, &ticks, CLOCK_MONOTONIC);
		if (!timer_rc)
			bpf_timer_set_callback(&t->timer, tick_cb);
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* iters.bpf.c - 6.4+ shapes: open-coded numeric iterators (the bpf_iter_num kfuncs
 * behind libbpf's bpf_for/bpf_repeat, declared here as a program built against an
 * older libbpf declares them) and a global function whose context argument is a
 * plain void * tagged arg:ctx (__arg_ctx, 6.8+).
 *
 *   iter_sum  SEC("tc"): sums the first ITER_BYTES bytes of the frame in a
 *             for_each_num loop (bounds-checked packet reads), counts REPEATS rounds of
 *             a repeat loop, and asks frame_len() (global, __arg_ctx) for skb->len.
 *             Stores {sum, rounds, len} in `iter_out`; returns TC_ACT_OK (0).
 * Documented input: 64 bytes, byte i = i + 1: sum 1 + ... + 16 = 136, rounds 5,
 * len 64. On 6.1 the kfuncs do not exist: the load fails, naming them.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define ITER_BYTES 16
#define REPEATS 5
#define __arg_ctx __attribute__((btf_decl_tag("arg:ctx")))

struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

/* i takes start, start + 1, ..., end - 1; the range check tells the verifier so. */
#define for_each_num(i, start, end)							\
	for (struct bpf_iter_num it_ __attribute__((cleanup(bpf_iter_num_destroy))),	\
	     *it_p_ __attribute__((unused)) =						\
		(bpf_iter_num_new(&it_, (start), (end)), &it_);				\
	     ({ int *n_ = bpf_iter_num_next(&it_);					\
		n_ && ((i) = *n_, (i) >= (start) && (i) < (end)); });)

#define repeat_times(count)								\
	for (struct bpf_iter_num it_ __attribute__((cleanup(bpf_iter_num_destroy))),	\
	     *it_p_ __attribute__((unused)) = (bpf_iter_num_new(&it_, 0, (count)), &it_); \
	     bpf_iter_num_next(&it_);)

struct iter_out {
	__u32 sum;
	__u32 rounds;
	__u32 len;
};

struct iter_out iter_out;

__noinline int frame_len(void *ctx __arg_ctx)
{
	struct __sk_buff *skb = ctx;

	return skb->len;
}

SEC("tc")
int iter_sum(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 sum = 0, rounds = 0;
	int i;

	for_each_num(i, 0, ITER_BYTES) {
		__u8 *p = data + i;

		if ((void *)(p + 1) > end)
			break;
		sum += *p;
	}
	repeat_times(REPEATS)
		rounds++;
	iter_out.sum = sum;
	iter_out.rounds = rounds;
	iter_out.len = frame_len(skb);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

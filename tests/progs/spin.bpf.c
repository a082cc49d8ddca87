// SPDX-License-Identifier: GPL-2.0
// A program that runs for a long time on purpose (seconds under TCG), so that a
// Ctrl-C can reach a running 'continue' or a long 'stepi N' in the debugger:
// bpf_loop(rounds) around bpf_loop(INNER). 'rounds' comes from a map (default
// DEFAULT_ROUNDS), so a test chooses how long a run takes.
//
// Known by construction: for each round r (< MAX_ROUNDS < INNER), i ^ r runs over 0..INNER-1, so
// sum = rounds * INNER * (INNER - 1) / 2 and the program returns sum % 65521.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define INNER (1 << 20)
#define MAX_ROUNDS 4096
#define DEFAULT_ROUNDS 16

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rounds SEC(".maps");

struct acc {
	__u64 sum;
	__u64 round;
};

static long add_one(__u64 i, struct acc *a)
{
	a->sum += i ^ a->round;
	return 0;
}

static long one_round(__u64 r, struct acc *a)
{
	a->round = r;
	bpf_loop(INNER, add_one, a, 0);
	return 0;
}

SEC("xdp")
int spin(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&rounds, &key);
	__u64 count = n && *n ? *n : DEFAULT_ROUNDS;
	struct acc a = {};

	if (count > MAX_ROUNDS)
		count = MAX_ROUNDS;
	bpf_loop(count, one_round, &a, 0);
	return a.sum % 65521;
}

char LICENSE[] SEC("license") = "GPL";

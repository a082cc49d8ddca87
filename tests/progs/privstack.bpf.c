// SPDX-License-Identifier: GPL-2.0
/* privstack.bpf.c - a tracing program that builds its event record on the stack.
 *
 * The shape of many tracing tools: a raw tracepoint copies its arguments into a
 * struct on the stack (here 96 bytes) and hands a pointer to it to a helper
 * function that folds it. Tracing program types with 64 bytes of stack or more
 * run on a per-CPU private stack from kernel 6.13: the JIT keeps the BPF frame
 * pointer in x86 r9 instead of rbp, in the program and in its subprogram.
 *
 * Documented input (tests/progs/expected.json, "privstack"): ctx = six u64
 * arguments 1..6 (test run of a raw tracepoint: no packet, the arguments are ctx).
 *   ev.args[i] = arg i + 1 = i + 2, ev.tag = 0x51, ev.words[j] = j * 3 (j < 4)
 *   fold(&ev) = sum(args) + tag + sum(words) * 2 = 27 + 81 + 36 = 144
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NARGS 6
#define NWORDS 4

struct event {
	__u64 args[NARGS];
	__u64 tag;
	__u32 words[NWORDS];
	__u64 pad[2];
};

/* Folds an event that lives on the caller's (private) stack; has its own stack too. */
static __attribute__((noinline))
__u64 fold(const struct event *ev)
{
	volatile __u64 scratch[NWORDS];
	__u64 sum = ev->tag;
	int i;

	for (i = 0; i < NWORDS; i++)
		scratch[i] = (__u64)ev->words[i] * 2;
	for (i = 0; i < NARGS; i++)
		sum += ev->args[i];
	for (i = 0; i < NWORDS; i++)
		sum += scratch[i];
	return sum;
}

SEC("raw_tp/sys_enter")
int privstack_main(__u64 *ctx)
{
	volatile struct event ev;
	int i;

	for (i = 0; i < NARGS; i++)
		ev.args[i] = ctx[i] + 1;
	ev.tag = 0x51;
	for (i = 0; i < NWORDS; i++)
		ev.words[i] = i * 3;
	ev.pad[0] = ev.pad[1] = 0;
	return (int)fold((const struct event *)&ev);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* linkmain.bpf.c - the program half of a statically linked object: calls
 * lib_fletcher() and reads lib_calls, both defined in linklib.bpf.c (extern here).
 * Linked with `bpftool gen object linked.bpf.o linkmain.bpf.o linklib.bpf.o`.
 *
 *   link_main  SEC("xdp"): copies the first 16 bytes of the frame to the stack,
 *              stores lib_fletcher(&copy) in `last_sum` and returns XDP_PASS (2);
 *              XDP_DROP (1) for a frame shorter than 16 bytes.
 * Documented input: 64 bytes, byte i = i + 1: Fletcher-16 of 1..16 is a = 136,
 * b = 816 % 255 = 51: last_sum = 0x3388; lib_calls = 1.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern __u32 lib_calls;
struct blob {
	__u8 bytes[16];
};

extern int lib_fletcher(const struct blob *blob);

__u32 last_sum;

SEC("xdp")
int link_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct blob copy;

	if (data + sizeof(copy) > end)
		return XDP_DROP;
	__builtin_memcpy(&copy, data, sizeof(copy));
	last_sum = lib_fletcher(&copy);
	return lib_calls ? XDP_PASS : XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";

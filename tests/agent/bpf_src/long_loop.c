// Correct program whose level-1 verifier log (25000 unrolled iterations, ~1 KiB each) is
// larger than the agent's 16 MiB log buffer: the kernel answers ENOSPC and the
// agent must retry the load without a log.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_long(struct xdp_md *ctx)
{
	__u32 i, sum = 0, x = ctx->ingress_ifindex;

	for (i = 0; i < 25000; i++)
		sum += i * (x ^ i);
	return sum & 1 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

/* The same loop, then a packet access without bounds check: rejected, with
 * the verifier's message at the very end of a log larger than 16 MiB. */
SEC("xdp")
int xdp_long_bad(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u32 i, sum = 0, x = ctx->ingress_ifindex;

	for (i = 0; i < 25000; i++)
		sum += i * (x ^ i);
	return sum + data[0];
}

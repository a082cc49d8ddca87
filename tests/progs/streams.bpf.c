// SPDX-License-Identifier: GPL-2.0
/* streams.bpf.c - an XDP program that writes to its BPF stdout stream with
 * the kfunc bpf_stream_vprintk (kernels with BPF streams: 6.17+ with this
 * four-argument form, 7.x). On kernels without it the weak kfunc resolves to
 * nothing and the program prints nothing.
 *
 * Returns XDP_PASS (2). Documented input: any 60-byte frame, which prints
 * "qstep-stream: len 60" on stdout.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int bpf_stream_vprintk(int stream_id, const char *fmt__str, const void *args,
			      __u32 len__sz) __weak __ksym;

SEC("xdp")
int stream_main(struct xdp_md *ctx)
{
	static const char fmt[] = "qstep-stream: len %u\n";
	unsigned long long args[1] = { ctx->data_end - ctx->data };

	if (bpf_stream_vprintk)   /* the kernel has it */
		bpf_stream_vprintk(1 /* stdout */, fmt, args, sizeof(args));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

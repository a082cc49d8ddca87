// SPDX-License-Identifier: GPL-2.0
/* cpu_id.bpf.c - a helper that newer kernels inline (XDP).
 * bpf_get_smp_processor_id() is a helper call on 6.1; from 6.10 the verifier inlines
 * it on x86-64 into a per-CPU load. BPF_PROG_TEST_RUN runs on CPU 0, so both kernels
 * return XDP_PASS + 0 = 2: the outcome is the same, the code differs.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int cpu_id_main(struct xdp_md *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return XDP_PASS + cpu;
}

char _license[] SEC("license") = "GPL";

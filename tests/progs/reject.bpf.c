// SPDX-License-Identifier: GPL-2.0
/* reject.bpf.c - a program the verifier REJECTS (XDP).
 *
 * The Ethernet header is bounds-checked, the IPv4 header behind it is not:
 * the load of iph->protocol (line 29, `return iph->protocol;`, marked
 * VERIFIER-REJECTS below) reads packet offset 23 while only 14 bytes are
 * proven. The 6.1, 6.12 and 6.18 verifiers end the log with (clang-19 -O2):
 *     ; return iph->protocol; ...  @ reject.bpf.c:29   (6.1: no "@ file:line")
 *     6: (71) r0 = *(u8 *)(r1 +23)
 *     invalid access to packet, off=23 size=1, R1(id=0,off=23,r=14)
 *     R1 offset is outside of the packet
 * Expected: BPF_PROG_LOAD fails with EACCES (-13); no retval.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int reject_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	return iph->protocol;   /* VERIFIER-REJECTS: no check of iph + 1 */
}

char LICENSE[] SEC("license") = "GPL";

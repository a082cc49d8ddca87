// SPDX-License-Identifier: GPL-2.0
/* config.bpf.c - an XDP port filter configured through .rodata (const
 * volatile globals, set before load as libbpf skeletons do) that reports
 * with bpf_printk.
 *
 *   blocked_port  (u16, host order; 0 = none) TCP destination port to block
 *   block_action  (u32) the verdict for a blocked frame (default XDP_DROP)
 *   verbose       (bool) bpf_printk one line per frame:
 *                 "qstep-config: dport %u verdict %u"
 * Blocked frames are counted in `blocked`[0] (.bss).
 * Documented input (60 bytes): IPv4 10.1.2.3 -> 10.9.9.9, TCP 1234 -> 80.
 *   defaults:                               XDP_PASS (2), blocked 0, no printk
 *   blocked_port=80:                        XDP_DROP (1), blocked 1
 *   blocked_port=80 block_action=3 verbose=1: XDP_TX (3), blocked 1, printk
 *                                         "qstep-config: dport 80 verdict 3"
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

const volatile __u16 blocked_port = 0;
const volatile __u32 block_action = XDP_DROP;
const volatile bool verbose = false;

__u64 blocked;

SEC("xdp")
int config_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);
	__u32 verdict = XDP_PASS;
	__u16 dport;

	if ((void *)(tcp + 1) > data_end || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	dport = bpf_ntohs(tcp->dest);
	if (blocked_port && dport == blocked_port) {
		verdict = block_action;
		blocked++;
	}
	if (verbose)
		bpf_printk("qstep-config: dport %u verdict %u", dport, verdict);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* merged.bpf.c - early returns the compiler folds into one shared exit.
 *
 * Most `return XDP_DROP;` / `return XDP_PASS;` lines below have no instruction of
 * their own at -O2: the return value is set before the condition's branch and the
 * branch goes to the function's single `exit` (line 'exit:' below). `break` and
 * `inspect` on such a line stop where the path to it is taken
 * (tests/vm/test_merged_lines.py).
 *
 * Input: Ethernet + IPv4 + UDP; which path a packet takes is known from its bytes.
 * stats[udp dest & 3] counts packets, dropped and passed.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct stats {
	__u64 packets;
	__u64 dropped;
	__u64 passed;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct stats);
} stats SEC(".maps");

SEC("xdp")
int merged(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 key;
	struct stats *s;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	if (ip->ttl <= 1)
		return XDP_DROP;
	if (ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_DROP;
	key = bpf_ntohs(udp->dest) & 3;
	s = bpf_map_lookup_elem(&stats, &key);
	if (!s)
		return XDP_ABORTED;
	s->packets++;
	if (udp->source == bpf_htons(666)) {
		s->dropped++;
		return XDP_DROP;
	}
	if (udp->dest == bpf_htons(7))
		return XDP_DROP;
	s->passed++;
	return XDP_PASS;
}

/* The last two returns: both paths from the condition meet the exit with nothing in
 * between, so no instruction tells line 'return XDP_DROP' from 'return XDP_PASS'. */
SEC("xdp")
int tail(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return XDP_DROP;
	return XDP_PASS;
}

static __noinline int tally(__u32 slot)
{
	struct stats *s = bpf_map_lookup_elem(&stats, &slot);

	if (s)
		s->passed++;
	return 0;
}

/* Either condition drops (two branches lead to the return); the last return follows a
 * call, its value set just before the exit. */
SEC("xdp")
int either(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || (eth->h_dest[0] & 1))
		return XDP_DROP;
	tally(eth->h_source[5] & 3);
	return XDP_PASS;
}

/* A tc classifier: two TC_ACT_SHOT returns folded into the exit, TC_ACT_OK after a
 * store to the context. */
SEC("tc")
int shot(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end)
		return TC_ACT_SHOT;
	if (ip->saddr == bpf_htonl(0x0a000063)) /* 10.0.0.99 is blocked */
		return TC_ACT_SHOT;
	skb->mark = ip->ttl;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* flowsum.bpf.c - shapes of real XDP programs: a parser that fills a struct
 * passed by pointer (a bpf-to-bpf call), a classifier whose switch the
 * compiler lowers to a chain of jumps, and a payload checksum computed with
 * bpf_loop and a callback that reads its context struct through a pointer.
 *
 *   flowsum_main  SEC("xdp"): parse_flow() fills struct flow from an IPv4
 *                 TCP/UDP frame (returns -1 otherwise: XDP_PASS); class_of()
 *                 maps the destination port to a class (switch: 22 -> 1,
 *                 53 -> 2, 80 -> 3, 443 -> 4, 8080 -> 5, else 0); bpf_loop
 *                 runs sum_byte() over the first SUM_BYTES payload bytes
 *                 (sum of the bytes, each times its index + 1). Stores the
 *                 flow, class and sum in `last` and counts packets per class
 *                 in `per_class`. Returns XDP_DROP (1) for class 1 (ssh),
 *                 XDP_TX (3) when the sum is odd, else XDP_PASS (2).
 * Documented input: IPv4 10.1.2.3 -> 10.9.9.9 TCP 1234 -> 80 whose payload
 * (after a 20-byte TCP header) starts 01 02 03 04 05 06 07 08: class 3,
 * sum = 1*1 + 2*2 + ... + 8*8 = 204 -> XDP_PASS.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SUM_BYTES 8

struct flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
	__u32 payload_off; /* from the start of the frame */
};

struct result {
	struct flow flow;
	__u32 class;
	__u32 sum;
};

struct sum_ctx {
	const __u8 *payload;
	const void *data_end;
	__u32 sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} last SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __u64);
} per_class SEC(".maps");

static __noinline int parse_flow(struct xdp_md *ctx, struct flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *l4 = (void *)(ip + 1); /* ports are first in TCP and UDP */

	if ((void *)(l4 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->sport = bpf_ntohs(l4->source);
	f->dport = bpf_ntohs(l4->dest);
	f->proto = ip->protocol;
	f->payload_off = sizeof(*eth) + sizeof(*ip) +
			 (ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr));
	return 0;
}

static __noinline __u32 class_of(const struct flow *f)
{
	switch (f->dport) {
	case 22:
		return 1;
	case 53:
		return 2;
	case 80:
		return 3;
	case 443:
		return 4;
	case 8080:
		return 5;
	default:
		return 0;
	}
}

static long sum_byte(__u32 index, void *data)
{
	struct sum_ctx *s = data;
	const __u8 *p;

	if (index >= SUM_BYTES)
		return 1;
	p = s->payload + index;
	if ((const void *)(p + 1) > s->data_end)
		return 1; /* stop the loop */
	s->sum += *p * (index + 1);
	return 0;
}

SEC("xdp")
int flowsum_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	struct result res = {};
	struct sum_ctx sc = {};
	__u32 zero = 0;
	__u64 *count;

	if (parse_flow(ctx, &res.flow))
		return XDP_PASS;
	res.class = class_of(&res.flow);
	sc.payload = data + (res.flow.payload_off & 0xff);
	sc.data_end = (void *)(long)ctx->data_end;
	bpf_loop(SUM_BYTES, sum_byte, &sc, 0);
	res.sum = sc.sum;
	bpf_map_update_elem(&last, &zero, &res, BPF_ANY);
	count = bpf_map_lookup_elem(&per_class, &res.class);
	if (count)
		__sync_fetch_and_add(count, 1);
	if (res.class == 1)
		return XDP_DROP;
	return res.sum & 1 ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* deadsub.bpf.c - an XDP load balancer whose IPv6 half is switched off by
 * configuration, as real balancers built for IPv4-only sites are: many
 * __noinline subprograms, five of them (the IPv6 ones) unreachable when
 * `enable_ipv6` (.rodata, frozen by libbpf) is false. A privileged load then
 * makes the verifier drop those subprograms entirely: the kernel JITs fewer
 * functions than the object's func_info lists.
 *
 * Balancing: a TCP packet to VIP 10.0.0.1:80 goes to backend
 *   idx = (saddr ^ sport ^ dport) & 3   (saddr, ports as read: network order)
 * whose address is 10.1.0.(idx+1); the destination address is rewritten,
 * the IPv4 header checksum recomputed, hits[idx] counted, XDP_TX (3) returned.
 * Anything else: XDP_PASS (2); IPv6 frames are counted in v6_seen (.bss)
 * only when enable_ipv6 is set (then the same VIP logic runs on 2001:db8::1
 * with backends 2001:db8:1::(idx+1), hop limit decremented, XDP_TX).
 * lb_ipv4_only_entry_point (a name longer than the kernel's 15 characters)
 * runs the IPv4 balancer alone.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define VIP4      0x0a000001       /* 10.0.0.1 */
#define BACKEND4  0x0a010000       /* 10.1.0.0 + idx + 1 */
#define VIP_PORT  80

const volatile bool enable_ipv6 = false;

__u64 v6_seen;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct flow {
	__u32 saddr;     /* IPv4, or the low word of the IPv6 source */
	__u16 sport;
	__u16 dport;
};

static __noinline int parse_eth(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	return bpf_ntohs(eth->h_proto);
}

static __noinline __u32 flow_hash(struct flow *f)
{
	return (f->saddr ^ f->sport ^ f->dport) & 3;
}

static __noinline void count_hit(__u32 idx)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &idx);

	if (slot)
		__sync_fetch_and_add(slot, 1);
}

/* IPv6-only helpers: dead unless enable_ipv6. */
static __noinline int parse_ipv6(struct ipv6hdr *ip6, void *data_end, struct flow *f)
{
	struct tcphdr *tcp = (void *)(ip6 + 1);

	if ((void *)(tcp + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
		return -1;
	f->saddr = ip6->saddr.in6_u.u6_addr32[3];
	f->sport = tcp->source;
	f->dport = tcp->dest;
	return 0;
}

static __noinline bool is_vip6(struct ipv6hdr *ip6)
{
	return ip6->daddr.in6_u.u6_addr32[0] == bpf_htonl(0x20010db8) &&
	       ip6->daddr.in6_u.u6_addr32[1] == 0 && ip6->daddr.in6_u.u6_addr32[2] == 0 &&
	       ip6->daddr.in6_u.u6_addr32[3] == bpf_htonl(1);
}

static __noinline void rewrite_ipv6(struct ipv6hdr *ip6, __u32 idx)
{
	ip6->daddr.in6_u.u6_addr32[1] = bpf_htonl(0x00010000);
	ip6->daddr.in6_u.u6_addr32[3] = bpf_htonl(idx + 1);
	ip6->hop_limit--;
}

static __noinline void count_v6(void)
{
	__sync_fetch_and_add(&v6_seen, 1);
}

static __noinline int balance_ipv6(void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct flow f = {};
	__u32 idx;

	if ((void *)(ip6 + 1) > data_end)
		return XDP_PASS;
	count_v6();
	if (parse_ipv6(ip6, data_end, &f) || !is_vip6(ip6) || f.dport != bpf_htons(VIP_PORT))
		return XDP_PASS;
	idx = flow_hash(&f);
	rewrite_ipv6(ip6, idx);
	count_hit(idx);
	return XDP_TX;
}

/* IPv4 path: always live. */
static __noinline int parse_ipv4(struct iphdr *ip, void *data_end, struct flow *f)
{
	struct tcphdr *tcp = (void *)(ip + 1);

	if ((void *)(tcp + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
		return -1;
	f->saddr = ip->saddr;
	f->sport = tcp->source;
	f->dport = tcp->dest;
	return 0;
}

static __noinline __u16 ipv4_csum(struct iphdr *ip)
{
	__u16 *words = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __noinline void rewrite_ipv4(struct iphdr *ip, __u32 idx)
{
	ip->daddr = bpf_htonl(BACKEND4 + idx + 1);
	ip->check = ipv4_csum(ip);
}

static __noinline int balance_ipv4(void *data, void *data_end)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct flow f = {};
	__u32 idx;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (parse_ipv4(ip, data_end, &f) || ip->daddr != bpf_htonl(VIP4) ||
	    f.dport != bpf_htons(VIP_PORT))
		return XDP_PASS;
	idx = flow_hash(&f);
	rewrite_ipv4(ip, idx);
	count_hit(idx);
	return XDP_TX;
}

SEC("xdp")
int lb_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int proto = parse_eth(data, data_end);

	if (proto == ETH_P_IPV6 && enable_ipv6)
		return balance_ipv6(data, data_end);
	if (proto == ETH_P_IP)
		return balance_ipv4(data, data_end);
	return XDP_PASS;
}

/* The IPv4 balancer alone, under a name longer than the kernel keeps (15). */
SEC("xdp")
int lb_ipv4_only_entry_point(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (parse_eth(data, data_end) != ETH_P_IP)
		return XDP_PASS;
	return balance_ipv4(data, data_end);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* tailcall.bpf.c - a dispatcher that tail-calls a per-protocol program through a
 * prog array initialised in the object (libbpf fills it when it loads them all).
 *
 *   tail_main  SEC("xdp"): counts the frame in seen[0], then tail-calls
 *              jumps[slot]: slot 0 for IPv4, 1 for IPv6, 2 (empty) for anything
 *              else, where the tail call falls through and it returns XDP_PASS (2).
 *   tail_v4    SEC("xdp"): counts the frame in seen[1]; XDP_TX (3) for TCP,
 *              else XDP_DROP (1).
 *   tail_v6    SEC("xdp"): counts the frame in seen[2]; XDP_DROP (1).
 * Documented input: the example's ipv4_to_v4real (IPv4 TCP) gives 3 through
 * tail_v4, ipv6_to_v6real gives 1 through tail_v6, an ARP frame gives 2.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&seen, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("xdp")
int tail_v4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);

	count(1);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	return ip->protocol == IPPROTO_TCP ? XDP_TX : XDP_DROP;
}

SEC("xdp")
int tail_v6(struct xdp_md *ctx)
{
	count(2);
	return XDP_DROP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = {
		[0] = (void *)&tail_v4,
		[1] = (void *)&tail_v6,
	},
};

SEC("xdp")
int tail_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 slot = 2;

	count(0);
	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		slot = 0;
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		slot = 1;
	bpf_tail_call(ctx, &jumps, slot);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

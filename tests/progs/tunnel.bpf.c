// SPDX-License-Identifier: GPL-2.0
/* tunnel.bpf.c - a field set on one path and not on another (XDP).
 *
 * The shape of the "remote ipv6 address not set up" bug: a tunnel entry in an
 * array map whose remote IPv6 address is filled only for IPv6 frames. Every frame
 * counts a hit; an IPv4 frame sets remote_v4 and leaves remote_v6 as it was, so
 * the check below drops it. Returns XDP_PASS (2) for an IPv6 frame of >= 54 bytes
 * on fresh maps (remote_v6 = its destination address), XDP_DROP (1) for IPv4.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct tunnel {
	__u32 remote_v4;
	__u32 remote_v6[4];
	__u32 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel);
} tunnels SEC(".maps");

SEC("xdp")
int tunnel_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 key = 0;
	struct tunnel *t;

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	t = bpf_map_lookup_elem(&tunnels, &key);
	if (!t)
		return XDP_ABORTED;
	t->hits += 1;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return XDP_DROP;
		__builtin_memcpy(t->remote_v6, &ip6->daddr, sizeof(t->remote_v6)); /* set */
	} else {
		t->remote_v4 = bpf_htonl(0x0a000001);
	}
	if (t->remote_v6[0] == 0 && t->remote_v6[3] == 0) /* check */
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

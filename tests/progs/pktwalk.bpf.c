// SPDX-License-Identifier: GPL-2.0
/* pktwalk.bpf.c - packet shapes of real XDP/tc programs, two programs sharing a
 * map and subprograms (one object, as Cilium's and xdp-tools' objects are):
 *
 *   xdp_walk  SEC("xdp"): reserves 8 bytes of metadata (bpf_xdp_adjust_meta) and
 *             fills struct pkt_meta there; skips up to two VLAN tags (unrolled);
 *             walks IPv6 extension headers (hop-by-hop 0, routing 43, destination
 *             options 60; at most MAX_EXT, a loop that is not unrolled) through a
 *             packet pointer with a variable offset; pops the outer VLAN tag
 *             (bpf_xdp_adjust_head +4 after moving the MAC addresses) and trims the
 *             bytes beyond the UDP datagram (bpf_xdp_adjust_tail). Returns XDP_TX
 *             (3) for UDP to port 53, else XDP_PASS (2); XDP_DROP (1) for a
 *             truncated header.
 *   tc_tag    SEC("tc"): bpf_skb_change_head(skb, 4) and writes the tag "QSTP"
 *             in front of the frame; returns TC_ACT_OK (0).
 *
 * Both count packets and bytes in `pkt_stats` (slot 0: xdp_walk, 1: tc_tag)
 * through account() (static, shared); frame_len() is a global function (verified
 * on its own, a ctx argument); bump() is a global function with a pointer to a
 * struct (checked for NULL, as the verifier demands).
 *
 * Documented input (tests/vm/test_prog_shapes.py builds it): Ethernet, 802.1Q
 * tag VID 100, 802.1Q tag VID 200, IPv6 (next header 0), hop-by-hop (8 bytes,
 * next 43), routing (16 bytes, next 60), destination options (8 bytes, next 17),
 * UDP 5000 -> 53 length 12, 4 payload bytes "ping", then 6 bytes of trailer: 112
 * bytes. xdp_walk: walk {vlan [100, 200], l4 17, ext 3, l4_off 94, dport 53,
 * udp_len 12}; the run's output is the 8 bytes of metadata {0x51535450, 100, 200}
 * then the frame without its outer tag and trailer (112 - 4 - 6 = 102 bytes);
 * XDP_TX. tc_tag: the tag then the input frame; pkt_stats[1] = {1, 112}.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_VLAN 2
#define MAX_EXT 4
#define META_MAGIC 0x51535450

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct pkt_meta {
	__u32 magic;
	__u16 vlan;
	__u16 inner_vlan;
};

struct walk {
	__u16 vlan[MAX_VLAN];
	__u8 l4;
	__u8 ext;
	__u16 l4_off;
	__u16 dport;
	__u16 udp_len;
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct counters);
} pkt_stats SEC(".maps");

struct walk last_walk; /* .bss: what xdp_walk found in its last packet */

__noinline int bump(struct counters *c, __u64 bytes)
{
	if (!c)
		return -1;
	c->packets += 1;
	c->bytes += bytes;
	return 0;
}

static __noinline int account(__u32 slot, __u64 bytes)
{
	struct counters *c = bpf_map_lookup_elem(&pkt_stats, &slot);

	if (!c)
		return -1;
	return bump(c, bytes);
}

__noinline int frame_len(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data;
}

static __always_inline int skip_vlans(void *data, void *end, __u32 *off, __u16 *proto,
				      struct walk *w)
{
	int i;

#pragma unroll
	for (i = 0; i < MAX_VLAN; i++) {
		struct vlan_tag *tag = data + *off;

		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > end)
			return -1;
		w->vlan[i] = bpf_ntohs(tag->tci) & 0x0fff;
		*proto = tag->proto;
		*off += sizeof(*tag);
	}
	return 0;
}

static __always_inline int walk_ext(void *data, void *end, __u32 *off, __u8 *nexthdr)
{
	int n = 0, i;

#pragma clang loop unroll(disable)
	for (i = 0; i < MAX_EXT; i++) {
		struct ipv6_opt_hdr *opt;

		if (*nexthdr != 0 && *nexthdr != 43 && *nexthdr != 60)
			break;
		opt = data + (*off & 0x1ff);
		if ((void *)(opt + 1) > end)
			return -1;
		*nexthdr = opt->nexthdr;
		*off = (*off & 0x1ff) + (opt->hdrlen + 1) * 8;
		n++;
	}
	return n;
}

SEC("xdp")
int xdp_walk(struct xdp_md *ctx)
{
	void *data, *end, *meta_area;
	struct pkt_meta *meta;
	struct walk w = {};
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	__u32 off = sizeof(struct ethhdr);
	__u16 proto;
	__u8 nexthdr;
	int ext, len, trim;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct pkt_meta)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	meta_area = (void *)(long)ctx->data_meta;
	meta = meta_area;
	eth = data;
	if ((void *)(meta + 1) > data || (void *)(eth + 1) > end)
		return XDP_DROP;
	proto = eth->h_proto;
	if (skip_vlans(data, end, &off, &proto, &w) || proto != bpf_htons(ETH_P_IPV6))
		return XDP_DROP;
	ip6 = data + off;
	if ((void *)(ip6 + 1) > end)
		return XDP_DROP;
	nexthdr = ip6->nexthdr;
	off += sizeof(*ip6);
	ext = walk_ext(data, end, &off, &nexthdr);
	if (ext < 0)
		return XDP_DROP;
	udp = data + (off & 0x1ff);
	if ((void *)(udp + 1) > end || nexthdr != IPPROTO_UDP)
		return XDP_DROP;
	w.l4 = nexthdr;
	w.ext = ext;
	w.l4_off = off & 0x1ff;
	w.dport = bpf_ntohs(udp->dest);
	w.udp_len = bpf_ntohs(udp->len);
	meta->magic = META_MAGIC;
	meta->vlan = w.vlan[0];
	meta->inner_vlan = w.vlan[1];
	last_walk = w;
	len = frame_len(ctx);
	account(0, len);
	trim = len - (int)w.l4_off - (int)w.udp_len;
	if (w.vlan[0]) { /* pop the outer tag: MAC addresses move 4 bytes up */
		__builtin_memmove(data + 4, data, 12);
		if (bpf_xdp_adjust_head(ctx, 4))
			return XDP_DROP;
	}
	if (trim > 0 && trim < 64 && bpf_xdp_adjust_tail(ctx, -trim))
		return XDP_DROP;
	return w.dport == 53 ? XDP_TX : XDP_PASS;
}

SEC("tc")
int tc_tag(struct __sk_buff *skb)
{
	__u32 tag = bpf_htonl(META_MAGIC);
	__u32 before = skb->len;

	if (bpf_skb_change_head(skb, sizeof(tag), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &tag, sizeof(tag), 0))
		return TC_ACT_SHOT;
	account(1, before);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

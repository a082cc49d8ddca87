// SPDX-License-Identifier: GPL-2.0
/* l4lb.bpf.c - a small L4 load balancer for the qstep demo (TC ingress).
 *
 * l4lb_ingress parses Ethernet + IPv4/IPv6 + TCP/UDP, then calls the
 * bpf-to-bpf subprogram process_packet(), which maps the destination
 * (VIP address, port, protocol) to a real server, sets the tunnel metadata
 * for the encapsulating device and redirects the packet there.
 *
 * Return values (TC actions) per path:
 *   TC_ACT_OK       (0)  not IPv4/IPv6, not TCP/UDP, truncated, IPv4 fragment,
 *                        or no VIP for the destination: pass to the stack
 *   TC_ACT_SHOT     (2)  VIP found but no real (ch_rings/reals miss), the real's
 *                        ctl_pos has no ctl_array slot, or a helper failed;
 *                        the reason is counted in drops[DROP_*]
 *   TC_ACT_REDIRECT (7)  balanced: stats[vip_num] counted, tunnel key set,
 *                        dst MAC rewritten, bpf_redirect(ctl->ifindex, 0)
 * Stats use __sync_fetch_and_add (BPF atomic add, "lock *(u64 *)" in bpftool).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_VIPS    16
#define MAX_REALS   16
#define RING_SIZE   4
#define F_IPV6      1       /* real_def.flags: the real is reached over IPv6 */
#define TUNNEL_TTL  64
#define IP_FRAGMENT 0x3fff  /* IPv4 MF flag | fragment offset */

enum drop_reason { DROP_NO_REAL = 0, DROP_NO_CTL = 1, DROP_TUNNEL = 2, DROP_REWRITE = 3 };

struct vip_key {
	union {
		__be32 v4;          /* IPv4 VIP (rest of the union is zero) */
		__be32 v6[4];       /* IPv6 VIP */
	} addr;
	__be16 port;
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;               /* explicit so the key has no hidden padding */
};

struct vip_meta { __u32 flags; __u32 vip_num; };
struct real_def { __be32 dst; __be32 dstv6[4]; __u8 flags; __u8 ctl_pos; };
struct ctl_value { __u32 ifindex; __u8 mac[6]; };
struct lb_stats { __u64 packets; __u64 bytes; };

/* What the parser extracts from the packet for process_packet(). */
struct pkt_desc {
	struct vip_key vip;     /* destination, exactly the vip_map key */
	__be32 src[4];          /* source address (IPv4 in src[0]) */
	__be16 sport;
};

struct l4ports { __be16 src; __be16 dst; };  /* common start of TCP and UDP */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vip_map SEC(".maps");

struct {  /* vip_num * RING_SIZE + hash % RING_SIZE -> index into reals */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS * RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} ch_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct real_def);
} reals SEC(".maps");

struct {  /* slot 0 = IPv4 egress, slot 1 = IPv6 egress */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ctl_value);
} ctl_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_stats);
} stats SEC(".maps");

struct {  /* indexed by enum drop_reason */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline int count_drop(__u32 reason)
{
	__u64 *cnt = bpf_map_lookup_elem(&drops, &reason);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return TC_ACT_SHOT;
}

/* A simple flow hash over the source address and port (u32 arithmetic on the
 * raw network-order words as loaded on a little-endian CPU). */
static __always_inline __u32 flow_hash(const struct pkt_desc *pkt, bool is_ipv6)
{
	__u32 h = pkt->src[0];

	if (is_ipv6)
		h ^= pkt->src[1] ^ pkt->src[2] ^ pkt->src[3];
	h ^= pkt->sport;
	h ^= h >> 16;
	h *= 0x45d9f3b;
	h ^= h >> 16;
	return h;
}

static __attribute__((noinline))
int process_packet(struct __sk_buff *skb, struct pkt_desc *pkt, bool is_ipv6)
{
	struct bpf_tunnel_key tkey = {};
	struct real_def *real;
	struct ctl_value *ctl;
	struct vip_meta *vip;
	struct lb_stats *st;
	__u32 slot, vip_num, ctl_pos, *real_idx;
	bool v6_real;

	/* 1. Is the destination a VIP?  If not, this is not our traffic. */
	vip = bpf_map_lookup_elem(&vip_map, &pkt->vip);
	if (!vip)
		return TC_ACT_OK;
	vip_num = vip->vip_num;

	/* 2. Pick a real: the VIP's ring of RING_SIZE slots, indexed by the hash. */
	slot = vip_num * RING_SIZE + flow_hash(pkt, is_ipv6) % RING_SIZE;
	real_idx = bpf_map_lookup_elem(&ch_rings, &slot);
	if (!real_idx)
		return count_drop(DROP_NO_REAL);
	real = bpf_map_lookup_elem(&reals, real_idx);
	if (!real)
		return count_drop(DROP_NO_REAL);

	/* 3. Tunnel metadata: remote_ipv4 is in host order, remote_ipv6 as is. */
	v6_real = real->flags & F_IPV6;
	if (v6_real)
		__builtin_memcpy(tkey.remote_ipv6, real->dstv6, sizeof(tkey.remote_ipv6));
	else
		tkey.remote_ipv4 = bpf_ntohl(real->dst);
	tkey.tunnel_id = vip_num;
	tkey.tunnel_ttl = TUNNEL_TTL;

	/* 4. Egress control for the real's family; ctl_pos >= 2 misses. */
	ctl_pos = real->ctl_pos;
	ctl = bpf_map_lookup_elem(&ctl_array, &ctl_pos);
	if (!ctl)
		return count_drop(DROP_NO_CTL);

	/* 5. Per-VIP counters; bytes = skb->len (the whole frame at TC ingress). */
	st = bpf_map_lookup_elem(&stats, &vip_num);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, skb->len);
	}

	/* 6. Attach the tunnel key, point the frame at the next hop, redirect. */
	if (bpf_skb_set_tunnel_key(skb, &tkey, sizeof(tkey),
				   v6_real ? BPF_F_TUNINFO_IPV6 : 0))
		return count_drop(DROP_TUNNEL);
	if (bpf_skb_store_bytes(skb, __builtin_offsetof(struct ethhdr, h_dest), ctl->mac, ETH_ALEN, 0))
		return count_drop(DROP_REWRITE);
	return bpf_redirect(ctl->ifindex, 0);   /* TC_ACT_REDIRECT */
}

SEC("tc")
int l4lb_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_desc pkt = {};   /* zeroed: unused address words and pad */
	struct l4ports *l4;
	bool is_ipv6;
	__u8 proto;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return TC_ACT_OK;
		if (iph->ihl < 5 || (iph->frag_off & bpf_htons(IP_FRAGMENT)))
			return TC_ACT_OK;       /* bad header or fragment: no ports */
		proto = iph->protocol;
		pkt.vip.addr.v4 = iph->daddr;
		pkt.src[0] = iph->saddr;
		l4 = (void *)iph + iph->ihl * 4;  /* variable offset, checked below */
		is_ipv6 = false;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return TC_ACT_OK;
		proto = ip6h->nexthdr;          /* no extension headers supported */
		__builtin_memcpy(pkt.vip.addr.v6, &ip6h->daddr, 16);
		__builtin_memcpy(pkt.src, &ip6h->saddr, 16);
		l4 = (void *)(ip6h + 1);
		is_ipv6 = true;
	} else {
		return TC_ACT_OK;
	}

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TC_ACT_OK;
	if ((void *)(l4 + 1) > data_end)
		return TC_ACT_OK;               /* truncated L4 header */
	pkt.vip.port = l4->dst;
	pkt.vip.proto = proto;
	pkt.sport = l4->src;

	return process_packet(skb, &pkt, is_ipv6);
}

char LICENSE[] SEC("license") = "GPL";

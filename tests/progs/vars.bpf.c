// SPDX-License-Identifier: GPL-2.0
/* vars.bpf.c - source-level variables: every value at every line is known from
 * the input packet and the map contents (tests/vm/test_source_vars.py).
 *
 * Shapes: inlined helpers (nested: hash_key -> fold_addr, ports_of), __noinline
 * subprograms (checksum with a loop, classify with structs passed by pointer),
 * structs on the stack passed by pointer, arrays, bitfields (our pkt_meta and the
 * kernel's iphdr), globals (.bss, .data, .rodata), a map value, an enum, and a
 * small struct scalar-replaced into registers (struct pair).
 *
 * Input: Ethernet + IPv4 (10.0.0.1 -> 10.0.0.10, ttl 64, UDP) + UDP 1234 -> 80.
 * Map "counters"[0] = {packets 5, bytes 1000}.  Result: XDP_PASS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct pkt_meta {
	__u32 len;
	__u8 version : 4;
	__u8 ihl : 4;
	__u8 ttl;
	__u16 csum_ok : 1;
	__u16 frag : 3;
	__u16 reserved : 12;
};

struct pair {
	__u32 lo;
	__u32 hi;
};

enum action { ACT_DROP = 1, ACT_PASS = 2, ACT_COUNT = 7 };

struct counters {
	__u64 packets;
	__u64 bytes;
	__u32 last_len;
	__u32 hits[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

__u32 total_seen;
__u32 weights[4] = {1, 2, 3, 4};
const volatile __u32 scale = 3;

static __always_inline __u32 fold_addr(__be32 a, __be32 b)
{
	__u32 x = bpf_ntohl(a);
	__u32 y = bpf_ntohl(b);
	__u32 mixed = x ^ (y >> 3);

	return mixed;
}

static __always_inline struct pair ports_of(const struct flow_key *k)
{
	struct pair p = { bpf_ntohs(k->sport), bpf_ntohs(k->dport) };

	return p;
}

static __always_inline __u32 hash_key(const struct flow_key *k)
{
	struct pair ports = ports_of(k);
	__u32 folded = fold_addr(k->saddr, k->daddr);

	return folded + ports.lo * 7 + ports.hi;
}

static __always_inline int read_key(void *data, void *end, struct flow_key *key,
				    struct pkt_meta *meta)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return -1;
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	key->sport = udp->source;
	key->dport = udp->dest;
	key->proto = ip->protocol;
	meta->len = (__u32)(end - data);
	meta->version = ip->version;
	meta->ihl = ip->ihl;
	meta->ttl = ip->ttl;
	meta->frag = (bpf_ntohs(ip->frag_off) & 0x1fff) ? 1 : 0;
	meta->csum_ok = 1;
	return 0;
}

static __attribute__((noinline)) __u32 checksum(const __u8 *bytes, int n)
{
	__u32 acc = 0;
	int i;

#pragma clang loop unroll(disable)
	for (i = 0; i < n; i++)
		acc = acc * 31 + bytes[i];
	return acc;
}

static __attribute__((noinline)) enum action classify(const struct pkt_meta *m,
						      const struct counters *c)
{
	enum action a = ACT_PASS;

	if (m->ttl < 2 || m->frag)
		a = ACT_DROP;
	else if (c->packets > 100)
		a = ACT_COUNT;
	return a;
}

SEC("xdp")
int vars_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key key = {};
	struct pkt_meta meta = {};
	__u32 zero = 0;
	struct counters *cnt;
	__u32 h, sum;
	enum action act;

	if (read_key(data, end, &key, &meta) < 0)
		return XDP_ABORTED;
	h = hash_key(&key);
	sum = checksum((const __u8 *)&key, sizeof(key));
	cnt = bpf_map_lookup_elem(&counters, &zero);
	if (!cnt)
		return XDP_ABORTED;
	act = classify(&meta, cnt);
	cnt->packets += 1;
	cnt->bytes += meta.len;
	cnt->last_len = h ^ sum;
	cnt->hits[act & 3] += 1;
	total_seen += weights[key.proto & 3] * scale;
	return act == ACT_DROP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

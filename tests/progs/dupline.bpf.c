// SPDX-License-Identifier: GPL-2.0
/* dupline.bpf.c - a TC classifier whose hot line the compiler duplicates.
 *
 * fold() is one FNV-1a step on one line (the "hot line", marked HOT). It is
 * inlined four times by the unrolled loop over the IPv4 source address, and
 * once more on each side of the protocol test (tail duplication of the same
 * source line into both branches). A breakpoint or probe on the hot line must
 * fire at every copy that runs: 5 times per IPv4 frame.
 *
 *   dup_classify  SEC("tc"): h = FNV-1a over saddr[0..3], then over 6 for TCP
 *                 or over the ttl otherwise; stores h in `last_hash`[0];
 *                 returns TC_ACT_SHOT (2) when h is odd, else TC_ACT_OK (0).
 *                 Non-IPv4 or short frames: TC_ACT_OK without hashing.
 * Documented input (60 bytes): IPv4 10.1.2.3 -> 10.9.9.9, ttl 64, TCP
 * 1234 -> 80: h = fnv1a(0a 01 02 03 06) = 0x6a4d7a48... see the test.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} last_hash SEC(".maps");

static __always_inline __u32 fold(__u32 h, __u8 byte)
{
	return (h ^ byte) * FNV_PRIME; /* HOT */
}

SEC("tc")
int dup_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u8 *addr = (__u8 *)&ip->saddr;
	__u32 h = FNV_OFFSET, zero = 0;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = fold(h, addr[i]);
	if (ip->protocol == IPPROTO_TCP)
		h = fold(h, IPPROTO_TCP);
	else
		h = fold(h, ip->ttl);
	bpf_map_update_elem(&last_hash, &zero, &h, BPF_ANY);
	return h & 1 ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

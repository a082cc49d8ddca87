// SPDX-License-Identifier: GPL-2.0
/* legacy.bpf.c - section names from before libbpf 1.0, as older projects
 * still write them. libbpf 1.x knows no program type for either section:
 * loading needs the type given (--prog-type sched_cls / xdp).
 *
 *   cls_ssh_guard  SEC("classifier/ingress")  (tc): TC_ACT_SHOT (2) for an
 *                  IPv4 TCP frame to port 22, else TC_ACT_OK (0); counts the
 *                  frames it shot in `shot`[0].
 *   xdp_ttl_guard  SEC("xdp_filter") (xdp): XDP_DROP (1) for an IPv4 frame
 *                  with ttl <= 1, else XDP_PASS (2).
 * Documented input (60 bytes): IPv4 10.1.2.3 -> 10.9.9.9, ttl 64, TCP
 * 1234 -> 22: cls_ssh_guard returns 2 and shot[0] = 1; xdp_ttl_guard 2.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shot SEC(".maps");

static __always_inline struct iphdr *ipv4_of(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip;
}

SEC("classifier/ingress")
int cls_ssh_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = ipv4_of(data, data_end);
	struct tcphdr *tcp;
	__u32 zero = 0;
	__u64 *count;

	if (!ip || ip->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end || tcp->dest != bpf_htons(22))
		return TC_ACT_OK;
	count = bpf_map_lookup_elem(&shot, &zero);
	if (count)
		*count += 1;
	return TC_ACT_SHOT;
}

SEC("xdp_filter")
int xdp_ttl_guard(struct xdp_md *ctx)
{
	struct iphdr *ip = ipv4_of((void *)(long)ctx->data, (void *)(long)ctx->data_end);

	if (ip && ip->ttl <= 1)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

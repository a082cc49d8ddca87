// SPDX-License-Identifier: GPL-2.0
/* progtypes.bpf.c - program types beyond tc and XDP that BPF_PROG_TEST_RUN runs
 * (or does not), one object:
 *
 *   sock_keep    SEC("socket"): a socket filter; keeps the first 42 bytes of an
 *                IPv4 UDP frame (returns 42), drops anything else (returns 0). It
 *                reads relative to the network header, as BPF_PROG_TEST_RUN hands
 *                socket filters the frame from its IP header on.
 *   dissect      SEC("flow_dissector"): fills the flow keys of an IPv4 frame
 *                (nhoff 14, thoff 34, n_proto, ip_proto, addresses, ports) and
 *                returns BPF_OK (0); BPF_DROP (2) for anything else.
 *   sys_sum      SEC("syscall"): sums the n values of its context struct into
 *                ctx->sum (the kernel copies the context back) and counts calls in
 *                .bss; returns the sum's low 32 bits. Documented context:
 *                n = 3, vals = {7, 11, 13, 0}: sum 31.
 *   on_test1     SEC("fentry/bpf_fentry_test1"): the kernel's test target for
 *                tracing programs; BPF_PROG_TEST_RUN calls the traced function, and
 *                the program runs only when attached: qstep loads it (disasm) and
 *                says why it does not run it.
 *
 * Documented frame: IPv4 10.1.2.3 -> 10.9.9.9, UDP 1234 -> 53, 60 bytes.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

struct sys_args {
	__u32 n;
	__u32 pad;
	__u64 vals[4];
	__u64 sum;
};

__u64 sys_calls;

SEC("socket")
int sock_keep(struct __sk_buff *skb)
{
	__u8 proto;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes_relative(skb, offsetof(struct iphdr, protocol), &proto, 1,
					BPF_HDR_START_NET))
		return 0;
	return proto == IPPROTO_UDP ? ETH_HLEN + sizeof(struct iphdr) + sizeof(struct udphdr) : 0;
}

SEC("flow_dissector")
int dissect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct bpf_flow_keys *keys = skb->flow_keys;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if (keys->nhoff > 64)
		return BPF_DROP;
	ip = data + keys->nhoff;
	if ((void *)(eth + 1) > end || (void *)(ip + 1) > end)
		return BPF_DROP;
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return BPF_DROP;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return BPF_DROP;
	keys->thoff = keys->nhoff + sizeof(*ip);
	keys->addr_proto = ETH_P_IP;
	keys->ip_proto = ip->protocol;
	keys->ipv4_src = ip->saddr;
	keys->ipv4_dst = ip->daddr;
	keys->sport = udp->source;
	keys->dport = udp->dest;
	return BPF_OK;
}

SEC("syscall")
int sys_sum(struct sys_args *args)
{
	__u64 sum = 0;
	__u32 n = args->n;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		if (i < n)
			sum += args->vals[i];
	args->sum = sum;
	sys_calls++;
	return sum;
}

__u64 test1_seen;

SEC("fentry/bpf_fentry_test1")
int BPF_PROG(on_test1, int a)
{
	test1_seen = a;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

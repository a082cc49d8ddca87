// SPDX-License-Identifier: GPL-2.0
/* conntrack.bpf.c - an XDP program that asks conntrack about each TCP flow
 * through the kfunc bpf_xdp_ct_lookup, which lives in the nf_conntrack
 * module (kernel 5.18+; the module must be loaded first).
 *
 * Returns XDP_PASS (2) for a flow conntrack knows, else XDP_DROP (1);
 * non-IPv4-TCP frames: XDP_PASS. The lookup's result is kept in `last`:
 * found (0/1) and opts.error (-ENOENT = -2 for an unknown flow).
 * Documented input (60 bytes): IPv4 10.1.2.3 -> 10.9.9.9, TCP 1234 -> 80,
 * on a guest that has seen no traffic: retval 1, last = {found 0, error -2}.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct nf_conn {
	int unused;   /* opaque here: only its pointer is used */
};

struct bpf_ct_opts {   /* the 12-byte layout every kernel since 5.18 accepts */
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *ctx, struct bpf_sock_tuple *tuple,
				  __u32 tuple_size, struct bpf_ct_opts *opts,
				  __u32 opts_size) __ksym;
void bpf_ct_release(struct nf_conn *ct) __ksym;

struct ct_result {
	__u32 found;
	__s32 error;
};

struct ct_result last;

SEC("xdp")
int ct_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);
	struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;

	if ((void *)(tcp + 1) > data_end || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	tuple.ipv4.saddr = ip->saddr;
	tuple.ipv4.daddr = ip->daddr;
	tuple.ipv4.sport = tcp->source;
	tuple.ipv4.dport = tcp->dest;
	ct = bpf_xdp_ct_lookup(ctx, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	last.error = opts.error;
	if (ct) {   /* a reference: test it right away, as the 6.1 verifier wants */
		bpf_ct_release(ct);
		last.found = 1;
		return XDP_PASS;
	}
	last.found = 0;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

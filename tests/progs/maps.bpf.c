// SPDX-License-Identifier: GPL-2.0
/* maps.bpf.c - maps, global data and packet writes (XDP).
 *
 * Covers:
 *   - ARRAY map lookup `pkt_stats` (the verifier inlines array lookups into
 *     plain pointer arithmetic: no helper call in the xlated code)
 *   - HASH map lookup + update `mac_seen` (helper calls), key = source MAC
 *   - a `.bss` global (`bss_packets`) and `.rodata` config (`cfg`, const
 *     volatile: libbpf freezes .rodata, so the verifier knows the values)
 *   - packet reads and writes: swaps the destination and source MAC
 *
 * Returns cfg.action = XDP_TX (3) for any frame of >= 14 bytes; the frame
 * comes back with the MACs swapped. (BPF_PROG_TEST_RUN rejects XDP input
 * shorter than 14 bytes, so the XDP_ABORTED branch is only reached in theory.)
 * Documented input: 60 bytes, dst MAC 02:00:00:00:00:01, src MAC
 * 02:00:00:00:00:02, EtherType 0x0800, then bytes 14..59 = 14..59.
 * After one run on fresh maps: pkt_stats[cfg.stats_slot = 2] = {1, 60},
 * mac_seen[{02:00:00:00:00:02}] = 1, bss_packets = 1. Values after N runs:
 * N, N*60, N, N.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct mac_key {
	__u8 addr[ETH_ALEN];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct counters);
} pkt_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, struct mac_key);
	__type(value, __u64);
} mac_seen SEC(".maps");

/* .rodata */
const volatile struct {
	__u32 action;           /* what to return after the swap */
	__u32 stats_slot;       /* index into pkt_stats */
} cfg = { .action = XDP_TX, .stats_slot = 2 };

/* .bss */
__u64 bss_packets;

SEC("xdp")
int maps_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mac_key key = {};
	struct counters *c;
	__u8 tmp[ETH_ALEN];
	__u64 one = 1, *seen;
	__u32 slot = cfg.stats_slot;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;

	/* Array lookup (inlined by the verifier), non-atomic increments. */
	c = bpf_map_lookup_elem(&pkt_stats, &slot);
	if (c) {
		c->packets += 1;
		c->bytes += data_end - data;
	}

	/* Hash: count frames per source MAC. */
	__builtin_memcpy(key.addr, eth->h_source, ETH_ALEN);
	seen = bpf_map_lookup_elem(&mac_seen, &key);
	if (seen)
		*seen += 1;
	else
		bpf_map_update_elem(&mac_seen, &key, &one, BPF_NOEXIST);

	bss_packets++;

	/* Swap destination and source MAC in place. */
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);

	return cfg.action;
}

char LICENSE[] SEC("license") = "GPL";

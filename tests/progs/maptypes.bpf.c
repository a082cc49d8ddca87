// SPDX-License-Identifier: GPL-2.0
/* maptypes.bpf.c - one XDP program with the map types real projects use.
 *
 * Written by the program on an IPv4 frame (eth + ipv4, >= 34 bytes):
 *   events      RINGBUF          one struct event per run
 *   perf_events PERF_EVENT_ARRAY bpf_perf_event_output of the event (its return
 *                                in event.perf_ret: 0 when a reader opened perf
 *                                buffers, as qstep does at load; else -ENOENT)
 *   flows       LRU_HASH         saddr -> runs seen
 *   cpu_stats   PERCPU_ARRAY     [0] += 1 on the running CPU
 *   prefixes    LPM_TRIE         looked up with the saddr (/32); the value
 *                                found (0 if none) goes to event.class
 *   fifo        QUEUE            pushes the frame length
 *   lifo        STACK            pushes the IPv4 protocol
 *   seen        BLOOM_FILTER     pushes the saddr
 *   big         ARRAY, 2^20 u32  big[len * 1000] += 1, big[2^20 - 1] = 0xabcd
 * Created but not used by the program (they must load and dump honestly):
 *   jumps PROG_ARRAY, outer ARRAY_OF_MAPS (inner_one), tx_ports DEVMAP,
 *   cpus CPUMAP, sk_data SK_STORAGE, pc_hash PERCPU_HASH, lru_pc_hash
 *   LRU_PERCPU_HASH, outer_hash HASH_OF_MAPS, tx_hash DEVMAP_HASH, socks
 *   SOCKMAP, sock_hash SOCKHASH, xsks XSKMAP, stacks STACK_TRACE, cgroups
 *   CGROUP_ARRAY, task_data TASK_STORAGE, inode_data INODE_STORAGE, from_user
 *   USER_RINGBUF, reuse REUSEPORT_SOCKARRAY: every map type of kernel 6.1 but
 *   STRUCT_OPS and the deprecated cgroup storage.
 *
 * Returns XDP_PASS (2) if the saddr is in `prefixes`, else XDP_DROP (1);
 * frames shorter than 34 bytes: XDP_ABORTED (0).
 * Documented input (60 bytes): IPv4 10.1.2.3 -> 10.9.9.9, protocol 6 (TCP).
 * With prefixes {prefixlen: 8, addr: 10.0.0.0} = 7, one run gives:
 *   retval 2, events: {len 60, saddr 10.1.2.3, class 7, perf_ret 0},
 *   perf_events: the same event with perf_ret 0 (before the call), padded by
 *   perf to 20 bytes,
 *   flows {10.1.2.3: 1}, cpu_stats[0] = 1, fifo [60], lifo [6],
 *   big[60000] = 1, big[1048575] = 0xabcd (every other entry 0).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 len;
	__be32 saddr;
	__u32 class;
	__s32 perf_ret;
};

struct lpm_v4 {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __be32);
	__type(value, __u64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} cpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u32);
} prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 8);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 8);
	__type(value, __u32);
} lifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__type(value, __be32);
} seen SEC(".maps");

#define BIG_ENTRIES (1u << 20)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BIG_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} big SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jumps SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} inner_one SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner_one },
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} sk_data SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pc_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} lru_pc_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} outer_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} tx_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} task_data SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} inode_data SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4096);
} from_user SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} reuse SEC(".maps");

/* .bss: the last event, as projects keep one to put the record type in BTF
 * (a type only local variables use is not there) */
struct event last_event;

SEC("xdp")
int maptypes_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct event ev = {};
	struct lpm_v4 key = {.prefixlen = 32};
	__u32 zero = 0, proto, slot, last = BIG_ENTRIES - 1, mark = 0xabcd;
	__u32 *class, *hits;
	__u64 one = 1, *count;

	if ((void *)(ip + 1) > data_end)
		return XDP_ABORTED;
	ev.len = data_end - data;
	ev.saddr = ip->saddr;
	proto = ip->protocol;

	key.addr = ip->saddr;
	class = bpf_map_lookup_elem(&prefixes, &key);
	ev.class = class ? *class : 0;

	count = bpf_map_lookup_elem(&flows, &ev.saddr);
	if (count)
		*count += 1;
	else
		bpf_map_update_elem(&flows, &ev.saddr, &one, BPF_ANY);

	count = bpf_map_lookup_elem(&cpu_stats, &zero);
	if (count)
		*count += 1;

	bpf_map_push_elem(&fifo, &ev.len, 0);
	bpf_map_push_elem(&lifo, &proto, 0);
	bpf_map_push_elem(&seen, &ev.saddr, 0);

	slot = ev.len * 1000;
	hits = bpf_map_lookup_elem(&big, &slot);
	if (hits)
		*hits += 1;
	bpf_map_update_elem(&big, &last, &mark, BPF_ANY);

	ev.perf_ret = bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	last_event = ev;

	return ev.class ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

/* Two programs in different sections, a bpf-to-bpf call, a BTF hash map, globals. */
#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static long (*bpf_map_lookup_elem_)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem_)(void *map, const void *key, const void *value,
				    __u64 flags) = (void *)2;

struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 flags : 3;
	__u8 kind : 5;
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	char name[8];
	__u32 addr6[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, 4);
	__uint(value_size, 8);
} counters SEC(".maps");

__u64 hits = 0;
__u32 limit = 7;
const volatile __u32 cfg_mode = 3;

static long (*trace_printk_)(const char *fmt, __u32 fmt_size, ...) = (void *)6;

__attribute__((noinline)) int global_scale(int x)
{
	return x * 3 + (int)limit;
}

static __attribute__((noinline)) int add_bytes(struct flow_val *v, __u32 len)
{
	v->packets += 1;
	v->bytes += len;
	return v->packets > (__u64)global_scale((int)len);
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	struct flow_key key = {};
	struct flow_val *v;
	__u32 len = ctx->data_end - ctx->data;

	key.proto = 6;
	key.kind = 3;
	v = (void *)bpf_map_lookup_elem_(&flows, &key);
	if (!v) {
		struct flow_val nv = {};
		bpf_map_update_elem_(&flows, &key, &nv, 0);
		return XDP_PASS;
	}
	hits++;
	if (add_bytes(v, len))
		return XDP_DROP;
	return cfg_mode == 3 ? XDP_PASS : XDP_TX;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__u32 k = 0;
	long *c = (void *)bpf_map_lookup_elem_(&counters, &k);

	if (c)
		__sync_fetch_and_add(c, 1);
	trace_printk_("len=%d\n", 8, skb->len);
	if (global_scale((int)skb->mark) > 9)
		return 1;
	return skb->len > 100 ? 2 : 0;
}

char LICENSE[] SEC("license") = "GPL";

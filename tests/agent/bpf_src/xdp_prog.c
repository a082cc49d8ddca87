// Test programs for tests/agent/test_agent_host.py.
// Build: clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c xdp_prog.c
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);   /* 4 bytes, 8 per CPU in the syscalls */
} percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 100001);   /* one more than a dump reports */
	__type(key, __u32);
	__type(value, __u8);
} big SEC(".maps");

__u64 hits = 0;                   /* .bss */
int tuning SEC(".data.tuning") = 5;   /* a custom data section: map ".data.tuning" */
const volatile int debug_mode = 0; /* .rodata: frozen, so the verifier knows it */

/* bpf-to-bpf subprogram: XDP_TX if the first byte is 0x42, else XDP_PASS */
static __noinline int classify(__u8 *data, __u8 *data_end)
{
	if (data + 1 > data_end)
		return XDP_PASS;
	return data[0] == 0x42 ? XDP_TX : XDP_PASS;
}

SEC("xdp")
int xdp_main(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;
	int action = classify(data, data_end);
	__u64 one = 1, *val;
	__u32 key;

	if (data + 2 > data_end)
		return XDP_ABORTED;
	key = data[0];
	val = bpf_map_lookup_elem(&counts, &key);
	if (val)
		__sync_fetch_and_add(val, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_ANY);
	__sync_fetch_and_add(&hits, 1);
	if (action == XDP_TX)
		data[1] = 0x99;
	return action;
}

/* rejected by the verifier: packet access without a bounds check */
SEC("xdp")
int xdp_bad(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;

	return data[0];
}

/* the branch on debug_mode is dead: the verifier removes its instructions */
SEC("xdp")
int xdp_dead(struct xdp_md *ctx)
{
	if (debug_mode) {
		hits += 1000;
		hits *= ctx->ingress_ifindex;
		hits ^= 0x1234;
	}
	return XDP_PASS;
}

/* prog_name in BPF_PROG_LOAD is cut to 15 characters: "xdp_name_longer" */
SEC("xdp")
int xdp_name_longer_than_15(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

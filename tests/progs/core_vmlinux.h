/* SPDX-License-Identifier: GPL-2.0 */
/* core_vmlinux.h - a vmlinux.h-style header for core.bpf.c: kernel types declared
 * the way `bpftool btf dump ... format c` declares them (no uapi headers, every
 * record preserve_access_index), but trimmed to a few fields in an order that is
 * NOT the kernel's, so every access needs libbpf's CO-RE relocation against the
 * guest kernel's BTF to land on the right bytes.
 */
#ifndef CORE_VMLINUX_H
#define CORE_VMLINUX_H

typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
};

/* The real values are 160 and 181; the relocation must supply them. */
enum bpf_func_id {
	BPF_FUNC_ktime_get_coarse_ns = 1,
	BPF_FUNC_loop = 2,
	BPF_FUNC_qstep_no_such_helper = 3,
};

struct __sk_buff {	/* the kernel's order: len, pkt_type, mark, ..., protocol (16) */
	__u32 protocol;
	__u32 len;
	__u32 ifindex;
	__u32 mark;
};

struct task_struct {	/* comm, pid and tgid are hundreds of bytes in, in another order */
	char comm[16];
	int tgid;
	int pid;
	struct task_struct *real_parent;
	unsigned int __state;
};

struct task_struct___pre514 {	/* before 5.14 the state field was 'long state' */
	long state;
};

struct bpf_iter_num {		/* 6.4+ (open-coded iterators) */
	__u64 __opaque[1];
} __attribute__((aligned(8)));

struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

#pragma clang attribute pop

#endif

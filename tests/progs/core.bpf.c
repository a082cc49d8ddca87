// SPDX-License-Identifier: GPL-2.0
/* core.bpf.c - CO-RE, as programs built against vmlinux.h have it: every kernel
 * type comes from core_vmlinux.h (preserve_access_index, fields in another order
 * than the kernel's) and libbpf relocates each access against the guest kernel's
 * BTF at load time.
 *
 *   core_task  SEC("raw_tp/sys_enter"): reads the current task's comm, pid and tgid
 *              and its parent's pid through BPF_CORE_READ (bpf_probe_read_kernel
 *              with relocated offsets), and records field/type/enum facts:
 *                has_state   bpf_core_field_exists(task->__state)          1
 *                has_old     bpf_core_field_exists(task___pre514->state)   0
 *                has_iter    bpf_core_type_exists(struct bpf_iter_num)     0 on 6.1, 1 on 6.4+
 *                comm_size   bpf_core_field_size(task->comm)               16
 *                coarse_id   bpf_core_enum_value(enum bpf_func_id, ..._ktime_get_coarse_ns) 160
 *                loop_id     bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_loop) 181
 *                has_none    bpf_core_enum_value_exists(..., BPF_FUNC_qstep_no_such_helper) 0
 *              and the syscall number from the tracepoint's args[1]. Returns 1 when
 *              BPF_CORE_READ's pid equals bpf_get_current_pid_tgid() >> 32 (the run's
 *              thread), else 0.
 *   core_skb   SEC("tc"): reads skb->len, skb->protocol and skb->mark through the
 *              local __sk_buff (whose offsets are not the kernel's: relocated ctx
 *              accesses); returns len + 1000 * (protocol == htons(0x0800)).
 */
#include "core_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct facts {
	char comm[16];
	__s32 pid;
	__s32 tgid;
	__s32 ppid;
	__u32 syscall;
	__u8 has_state;
	__u8 has_old;
	__u8 has_iter;
	__u8 has_none;
	__u32 comm_size;
	__u32 coarse_id;
	__u32 loop_id;
};

struct facts facts;
__u32 skb_seen[3];

SEC("raw_tp/sys_enter")
int core_task(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	BPF_CORE_READ_STR_INTO(&facts.comm, task, comm);
	facts.pid = BPF_CORE_READ(task, pid);
	facts.tgid = BPF_CORE_READ(task, tgid);
	facts.ppid = BPF_CORE_READ(task, real_parent, pid);
	facts.syscall = ctx->args[1];
	facts.has_state = bpf_core_field_exists(task->__state);
	facts.has_old = bpf_core_field_exists(((struct task_struct___pre514 *)task)->state);
	facts.has_iter = bpf_core_type_exists(struct bpf_iter_num);
	facts.comm_size = bpf_core_field_size(task->comm);
	facts.coarse_id = bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns);
	facts.loop_id = bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_loop);
	facts.has_none = bpf_core_enum_value_exists(enum bpf_func_id,
						    BPF_FUNC_qstep_no_such_helper);
	return facts.pid == (__s32)(id >> 32);
}

/* The Tracee/Falco shape: a kprobe reading the current task through CO-RE. Loads and
 * disassembles; BPF_PROG_TEST_RUN cannot run kprobes, and qstep says so. */
SEC("kprobe/do_nanosleep")
int core_kprobe(void *regs)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	facts.ppid = BPF_CORE_READ(task, real_parent, tgid);
	return 0;
}

SEC("tc")
int core_skb(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 proto = skb->protocol;

	skb_seen[0] = len;
	skb_seen[1] = proto;
	skb_seen[2] = skb->mark;
	return len + (proto == __builtin_bswap16(0x0800) ? 1000 : 0);
}

char LICENSE[] SEC("license") = "GPL";

/* ISA v4 instructions (compile with -mcpu=v4): sdiv/smod, movsx, ldsx, bswap, gotol,
 * plus atomics with fetch, xchg and cmpxchg. */
#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))

long counter = 0;
int small = 0;

SEC("socket")
int v4_ops(struct __sk_buff *skb)
{
	long a = skb->len, b = skb->mark | 1;
	int c = (int)skb->priority, d = (int)skb->hash | 1;
	signed char *p = (signed char *)&skb->cb[0];
	short *q = (short *)&skb->cb[1];
	long r = 0;

	r += a / b;
	r += a % b;
	r += c / d;
	r += c % d;
	r += (long)(signed char)a;
	r += (long)(short)b;
	r += (long)(int)r;
	r += *p;
	r += *q;
	r += __builtin_bswap16((__u16)a);
	r += __builtin_bswap32((__u32)b);
	r += __builtin_bswap64((__u64)r);
	r += __sync_fetch_and_add(&counter, 2);
	r += __sync_fetch_and_or(&counter, 4);
	r += __sync_fetch_and_and(&counter, 8);
	r += __sync_fetch_and_xor(&counter, 16);
	__sync_fetch_and_or(&small, 1);
	__sync_fetch_and_xor(&small, 2);
	r += __sync_lock_test_and_set(&counter, 5);
	r += __sync_val_compare_and_swap(&counter, 5, 6);
	r += __sync_val_compare_and_swap(&small, 1, 2);
	asm volatile("gotol +1; r0 = 0;" ::: "r0");
	asm volatile("r0 = *(s32 *)(r10 - 8)" ::: "r0");
	asm volatile("r1 = %[x]; r2 = %[y]; r1 s/= r2; r1 s%%= r2; r1 s/= -3; r1 s%%= 5;"
		     "w1 s/= w2; w1 s%%= w2; w1 = (s8)w2; w1 = (s16)w2;"
		     "if w1 s< w2 goto +1; r1 = -r1; w1 = -w1; r1 = be32 r1; r1 = le64 r1;"
		     :: [x] "r"(a), [y] "r"(b) : "r1", "r2");
	return (int)r;
}

char LICENSE[] SEC("license") = "GPL";

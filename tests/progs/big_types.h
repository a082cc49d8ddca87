/* big_types.h - a large graph of kernel-like types, written by the preprocessor.
 *
 * Programs built on vmlinux.h pull thousands of types into their BTF and DWARF
 * and reach 700 KB with -g. BIG_TYPES(p) defines 1000 such types named p000 ..
 * p999 (each a struct with an enum, a union, an embedded list head, an array and
 * a function pointer, every field named after its struct as kernel fields are)
 * and `struct p_root`, which points to all of them: a program that uses the
 * root carries the whole graph in its debug info.
 */
#ifndef BIG_TYPES_H
#define BIG_TYPES_H

#define BT_D10(M, p) M(p##0) M(p##1) M(p##2) M(p##3) M(p##4) \
	M(p##5) M(p##6) M(p##7) M(p##8) M(p##9)
#define BT_D100(M, p) BT_D10(M, p##0) BT_D10(M, p##1) BT_D10(M, p##2) BT_D10(M, p##3) \
	BT_D10(M, p##4) BT_D10(M, p##5) BT_D10(M, p##6) BT_D10(M, p##7) BT_D10(M, p##8) \
	BT_D10(M, p##9)
#define BT_D1000(M, p) BT_D100(M, p##0) BT_D100(M, p##1) BT_D100(M, p##2) BT_D100(M, p##3) \
	BT_D100(M, p##4) BT_D100(M, p##5) BT_D100(M, p##6) BT_D100(M, p##7) BT_D100(M, p##8) \
	BT_D100(M, p##9)

struct bt_list {
	struct bt_list *next, *prev;
};

#define BT_STRUCT(n) \
	enum n##_state { n##_IDLE, n##_BUSY = 3, n##_DONE = 7 }; \
	struct n { \
		__u64 n##_id; \
		__u32 n##_flags; \
		__u16 n##_kind, n##_len; \
		struct bt_list n##_list; \
		enum n##_state n##_state; \
		union { __u32 n##_word; __u8 n##_bytes[4]; } n##_u; \
		int (*n##_op)(struct n *self, __u32 arg); \
		unsigned char n##_tail[8]; \
	};
#define BT_MEMBER(n) struct n *n##_ptr;

#define BIG_TYPES(p) \
	BT_D1000(BT_STRUCT, p) \
	struct p##_root { BT_D1000(BT_MEMBER, p) };

#endif

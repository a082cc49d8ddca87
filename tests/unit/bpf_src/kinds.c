/* Exercises BTF kinds: ENUM64, DECL_TAG, TYPE_TAG, FLOAT, unions, anonymous members,
 * function pointers, 2-D arrays, and CO-RE relocations (.BTF.ext core_relo). */
#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))

enum big { BIG_SMALL = 1, BIG_HUGE = 0x100000000ULL };
enum color { RED, GREEN = 5, BLUE = -2 };

struct task_like {
	int pid;
	char comm[16];
} __attribute__((preserve_access_index));

struct shape {
	float ratio;
	double area;
	enum big size;
	enum color color;
	union {
		__u32 v4;
		__u8 bytes[4];
	};
	struct {
		__u16 lo;
		__u16 hi;
	} parts;
	int grid[2][3];
	int (*cb)(int, long);
	int __attribute__((btf_type_tag("user"))) *uptr;
	const char *name;
} __attribute__((btf_decl_tag("shape_tag")));

struct shape shapes[2] SEC(".data.shapes");
int tagged __attribute__((btf_decl_tag("var_tag"))) = 1;

SEC("kprobe/do_thing")
int kinds_prog(struct task_like *t)
{
	shapes[0].ratio = 1.5f;
	shapes[1].size = BIG_HUGE;
	return t->pid + shapes[0].v4 + shapes[1].parts.hi + shapes[0].color;
}

char LICENSE[] SEC("license") = "GPL";

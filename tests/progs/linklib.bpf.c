// SPDX-License-Identifier: GPL-2.0
/* linklib.bpf.c - the library half of a statically linked object (bpftool gen object
 * linked.bpf.o linkmain.bpf.o linklib.bpf.o): a global function and a global
 * variable that linkmain.bpf.c declares extern. See linkmain.bpf.c.
 */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct blob {
	__u8 bytes[16];
};

__u32 lib_calls;

/* Fletcher-16 of a blob; calls are counted in lib_calls. The verifier checks a global
 * function once for any caller: the pointer is to sizeof(struct blob) bytes, maybe NULL.
 */
__noinline int lib_fletcher(const struct blob *blob)
{
	__u32 a = 0, b = 0;
	int i;

	lib_calls++;
	if (!blob)
		return -1;
	for (i = 0; i < sizeof(blob->bytes); i++) {
		a = (a + blob->bytes[i]) % 255;
		b = (b + a) % 255;
	}
	return (b << 8) | a;
}

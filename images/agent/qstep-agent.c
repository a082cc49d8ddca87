/*
 * qstep-agent: the in-guest agent of qstep, protocol v2 (docs/agent-protocol.md).
 *
 * Build (fully static; images/agent/Makefile does the same):
 *   gcc -static -O2 -Wall -Wextra -o qstep-agent qstep-agent.c \
 *       -Wl,--wrap=syscall -lbpf -lelf -lz -lzstd
 * libbpf must be linked statically: --wrap only rewrites references that the
 * static link resolves, and libbpf enters the kernel via syscall(__NR_bpf, ...).
 *
 * Usage: qstep-agent [--window FILE] [DEVICE]   DEVICE (e.g. /dev/ttyS1) is
 * opened and put in raw mode; without it the agent serves stdin/stdout (host
 * tests). Large blobs travel through a shared-memory window: FILE, or else (with
 * a DEVICE) the BAR2 of the ivshmem PCI device, mapped through sysfs.
 *        qstep-agent --load-pin OBJ.o PROG_NAME PIN_PATH   an ordinary loader
 * (no interception) for "foreign" programs: loads and pins PROG_NAME alone.
 *
 * The BPF_PROG_LOAD of the requested program is intercepted: libbpf's final
 * insns/line_info/func_info are saved and the line_info is replaced by a
 * synthetic one, one record per instruction with line_col = instruction index,
 * so that the kernel's jited_line_info gives the JIT address of every
 * instruction that survives verification.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/utsname.h>
#include <linux/bpf.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define PROTOCOL_VERSION 3
#define DUMP_MAX_ENTRIES 100000
#define RUN_MAX_OUT (64u << 20)
#define MAX_ARGS 40
#define FLUSH_THRESHOLD (1u << 20)
/* A verifier log over LOG_CAP bytes is sent as its first LOG_HEAD and last
 * LOG_TAIL bytes (as hex, the serial line carries ~90 KB/s out of the guest). */
#define LOG_CAP (1u << 20)
#define LOG_HEAD (64u << 10)
#define LOG_TAIL (LOG_CAP - LOG_HEAD)

#define offsetofend(T, m) (offsetof(T, m) + sizeof(((T *)0)->m))
#define MIN(x, y) ((x) < (y) ? (x) : (y))
#define PTR(u64) ((void *)(uintptr_t)(u64))

/* ------------------------------------------------------------ growable buffer */

struct buf {
	char *p;
	size_t len, cap;   /* p[len] is always '\0' */
};

static void buf_reserve(struct buf *b, size_t extra)
{
	size_t cap = b->cap ? b->cap : 256;

	if (b->len + extra + 1 <= b->cap)
		return;
	while (cap < b->len + extra + 1)
		cap *= 2;
	if (!(b->p = realloc(b->p, cap))) {
		fputs("qstep-agent: out of memory\n", stderr);
		abort();
	}
	b->cap = cap;
}

static void buf_add(struct buf *b, const void *data, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n <= 0)
		return;
	buf_reserve(b, (size_t)n);
	b->len += (size_t)vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
}

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Records kept for a later reply: u32 size, then the bytes, each; over cap
 * bytes they are counted in *lost instead. */
static void records_keep(struct buf *pending, long long *lost, size_t cap, const void *data,
			 size_t size)
{
	__u32 n = (__u32)size;

	if (pending->len + sizeof(n) + size > cap) {
		(*lost)++;
		return;
	}
	buf_add(pending, &n, sizeof(n));
	buf_add(pending, data, size);
}

/* ------------------------------------------------------------ shared-memory window */

/* Header layout and ring rules: qstep/agent/window.py and qstep/agent/ring.py. */
#define WIN_MAGIC "QSTEPWIN"
#define WIN_LAYOUT 1
#define WIN_H2G_TAIL 64     /* u64, we write: host blobs consumed up to here */
#define WIN_G2H_TAIL 128    /* u64, the host writes: our blobs consumed up to here */
#define WIN_ATTACHED 192    /* u32, we write our protocol version once mapped */
#define WIN_ENABLED 196     /* u32, the host writes: 1 = reply blobs may go here */
#define WIN_MIN_BLOB 64     /* smaller blobs stay inline as hex */
#define WIN_WAIT_US 200000  /* longest wait for the host to free ring space */

struct win_header {
	char magic[8];
	__u32 layout, header_size;
	__u64 ring_size, h2g_off, g2h_off;
};

static struct window {
	unsigned char *base;   /* NULL: no window, every blob is hex */
	size_t size;
	__u64 ring_size, h2g_off, g2h_off;
	__u64 head;            /* our producer position in the guest->host ring */
	int waited;            /* a wait for space timed out during this reply */
} g_win;

static volatile __u64 *win_u64(size_t off)
{
	return (volatile __u64 *)(g_win.base + off);
}

static volatile __u32 *win_u32(size_t off)
{
	return (volatile __u32 *)(g_win.base + off);
}

/* Adopts a mapping whose header the host wrote; returns 0 or -1 (unmapped). */
static int window_adopt(unsigned char *base, size_t size)
{
	struct win_header h;

	memcpy(&h, base, sizeof(h));
	if (memcmp(h.magic, WIN_MAGIC, 8) || h.layout != WIN_LAYOUT || !h.ring_size ||
	    h.h2g_off < 256 || h.h2g_off + h.ring_size > h.g2h_off || h.g2h_off > size ||
	    h.ring_size > size - h.g2h_off) {
		munmap(base, size);
		return -1;
	}
	g_win = (struct window){.base = base, .size = size, .ring_size = h.ring_size,
				.h2g_off = h.h2g_off, .g2h_off = h.g2h_off};
	__atomic_store_n(win_u32(WIN_ATTACHED), PROTOCOL_VERSION, __ATOMIC_RELEASE);
	return 0;
}

static int window_map(const char *path)
{
	int fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
	struct stat st;
	void *base;

	if (fd < 0 || fstat(fd, &st) || st.st_size < 4096) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return base == MAP_FAILED ? -1 : window_adopt(base, (size_t)st.st_size);
}

static int sysfs_read(const char *dir, const char *file, char *out, size_t n)
{
	char path[512];
	ssize_t got;
	int fd;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/%s", dir, file);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	got = read(fd, out, n - 1);
	close(fd);
	out[got > 0 ? got : 0] = '\0';
	return got > 0 ? 0 : -1;
}

/* The ivshmem-plain device (1af4:1110): its BAR2 is the window. No driver
 * needed: sysfs maps the BAR; "enable" turns on memory decoding. */
static int window_find_pci(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	char vendor[16], device[16], path[512];
	int found = -1;

	while (d && found && (e = readdir(d))) {
		if (e->d_name[0] == '.' || sysfs_read(e->d_name, "vendor", vendor, sizeof(vendor)) ||
		    sysfs_read(e->d_name, "device", device, sizeof(device)) ||
		    strncmp(vendor, "0x1af4", 6) || strncmp(device, "0x1110", 6))
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/enable", e->d_name);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0 && write(fd, "1", 1) < 0)
			fprintf(stderr, "qstep-agent: enabling %s: %s\n", e->d_name, strerror(errno));
		if (fd >= 0)
			close(fd);
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource2", e->d_name);
		found = window_map(path);
	}
	if (d)
		closedir(d);
	return found;
}

/* Where `len` bytes go in a ring with consumer `tail` (rules: ring.py). */
static int ring_place(__u64 size, __u64 *head, __u64 tail, __u64 len, __u64 *pos)
{
	__u64 off = *head % size, start;
	int empty = tail == *head;

	if (!len || len > size || tail > *head)
		return -1;
	start = empty || off + len > size ? *head + (size - off) % size : *head;
	if (!empty && start + len - tail > size)
		return -1;
	*head = start + len;
	*pos = start;
	return 0;
}

/* A "s:POS:LEN" token -> its bytes in the host->guest ring, or NULL. */
static const unsigned char *window_blob(const char *t, __u64 *pos, __u64 *len)
{
	char *end;

	if (strncmp(t, "s:", 2) || !isdigit((unsigned char)t[2]))
		return NULL;
	*pos = strtoull(t + 2, &end, 10);
	if (*end != ':' || !isdigit((unsigned char)end[1]))
		return NULL;
	*len = strtoull(end + 1, &end, 10);
	if (*end || !g_win.base || *len > g_win.ring_size || *pos % g_win.ring_size + *len > g_win.ring_size)
		return NULL;
	return g_win.base + g_win.h2g_off + *pos % g_win.ring_size;
}

/* Frees the host's blobs of a request up to `end` (they have been copied). */
static void window_release(__u64 end)
{
	if (g_win.base && end)
		__atomic_store_n(win_u64(WIN_H2G_TAIL), end, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------ reply writer */

struct reply {
	int fd;
	const char *seq;   /* of the request being answered */
	struct buf out;
};

static void reply_flush(struct reply *r)
{
	const char *p = r->out.p;
	size_t n = r->out.len;

	while (n) {
		ssize_t w = write(r->fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {   /* the host is gone: nothing left to serve */
			fprintf(stderr, "qstep-agent: write: %s\n", strerror(errno));
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
	r->out.len = 0;
}

static void reply_head(struct reply *r, const char *key)
{
	buf_printf(&r->out, "%s %s", r->seq, key);
}

/* Appends the hex digits of data to the current line. */
static void reply_hex_digits(struct reply *r, const void *data, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;

	for (size_t i = 0; i < n; i++) {
		buf_reserve(&r->out, MIN(2 * (n - i), FLUSH_THRESHOLD));
		r->out.p[r->out.len++] = hex[p[i] >> 4];
		r->out.p[r->out.len++] = hex[p[i] & 15];
		if (r->out.len >= FLUSH_THRESHOLD)
			reply_flush(r);
	}
	r->out.p[r->out.len] = '\0';
}

/* Space for `n` bytes in the guest->host ring; when it is full, the lines
 * written so far go out first so that the host can free it. */
static int reply_place(struct reply *r, size_t n, __u64 *pos)
{
	__u64 tail = __atomic_load_n(win_u64(WIN_G2H_TAIL), __ATOMIC_ACQUIRE);

	if (!ring_place(g_win.ring_size, &g_win.head, tail, n, pos))
		return 0;
	if (g_win.waited || n > g_win.ring_size)
		return -1;
	reply_flush(r);
	for (long waited = 0; waited < WIN_WAIT_US; waited += 500) {
		usleep(500);
		tail = __atomic_load_n(win_u64(WIN_G2H_TAIL), __ATOMIC_ACQUIRE);
		if (!ring_place(g_win.ring_size, &g_win.head, tail, n, pos))
			return 0;
	}
	g_win.waited = 1;
	return -1;
}

/* Appends " s:POS:LEN" (the bytes copied into the window) or " x:<hex>". */
static void reply_hex(struct reply *r, const void *data, size_t n)
{
	__u64 pos;

	if (g_win.base && n >= WIN_MIN_BLOB && *win_u32(WIN_ENABLED) == 1 &&
	    !reply_place(r, n, &pos)) {
		memcpy(g_win.base + g_win.g2h_off + pos % g_win.ring_size, data, n);
		buf_printf(&r->out, " s:%llu:%zu", (unsigned long long)pos, n);
		return;
	}
	buf_add(&r->out, " x:", 3);
	reply_hex_digits(r, data, n);
}

static void reply_end_line(struct reply *r)
{
	buf_add(&r->out, "\n", 1);
	if (r->out.len >= FLUSH_THRESHOLD)
		reply_flush(r);
}

static void reply_line(struct reply *r, const char *key, const char *fmt, ...)
{
	va_list ap;

	buf_printf(&r->out, "%s %s ", r->seq, key);
	va_start(ap, fmt);
	buf_vprintf(&r->out, fmt, ap);
	va_end(ap);
	reply_end_line(r);
}

static void reply_int(struct reply *r, const char *key, long long v)
{
	reply_line(r, key, "%lld", v);
}

static void reply_word(struct reply *r, const char *key, const char *w)
{
	reply_line(r, key, "%s", w);
}

static void reply_blob(struct reply *r, const char *key, const void *data, size_t n)
{
	reply_head(r, key);
	reply_hex(r, data, n);
	reply_end_line(r);
}

static void reply_ok(struct reply *r)
{
	buf_printf(&r->out, "%s ok\n", r->seq);
	reply_flush(r);
}

/* A verifier log as one blob. Over LOG_CAP bytes, only its head and tail (cut
 * at line ends) are sent, around a line "... [N bytes omitted] ...". */
static void reply_log(struct reply *r, const char *key, const char *log, size_t len)
{
	size_t head = LOG_HEAD, tail = len - LOG_TAIL;   /* send [0, head) and [tail, len) */
	const char *nl;
	char marker[64];
	struct buf cut = {0};

	reply_head(r, key);
	if (len <= LOG_CAP) {
		reply_hex(r, log, len);
		reply_end_line(r);
		return;
	}
	if ((nl = memrchr(log, '\n', head)))
		head = (size_t)(nl - log) + 1;
	if (log[tail - 1] != '\n' && (nl = memchr(log + tail, '\n', len - tail)) && nl + 1 < log + len)
		tail = (size_t)(nl - log) + 1;
	snprintf(marker, sizeof(marker), "%s... [%zu bytes omitted] ...\n",
		 log[head - 1] == '\n' ? "" : "\n", tail - head);
	buf_add(&cut, log, head);
	buf_add(&cut, marker, strlen(marker));
	buf_add(&cut, log + tail, len - tail);
	reply_hex(r, cut.p, cut.len);
	reply_end_line(r);
	buf_free(&cut);
}

/* Terminal error line; always returns -1 so verbs can `return reply_err(...)`. */
static int reply_err(struct reply *r, const char *fmt, ...)
{
	struct buf msg = {0};
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < msg.len; i++)   /* the message must stay on its line */
		if (msg.p[i] == '\n' || msg.p[i] == '\r')
			msg.p[i] = ' ';
	buf_printf(&r->out, "%s err %s\n", r->seq, msg.len ? msg.p : "error");
	buf_free(&msg);
	reply_flush(r);
	return -1;
}

/* ------------------------------------------------------------ request tokens */

struct arg {
	const char *s;      /* the token (words) */
	long long i;        /* integers */
	unsigned char *b;   /* blobs: hex decoded in place, or a copy from the window */
	size_t n;
	unsigned char *owned;   /* the copy, freed after the request */
};

/* -2^63 .. 2^64-1; values over 2^63-1 (kernel addresses) keep their bits. */
static int parse_int(const char *t, long long *v)
{
	const char *digits = t + (*t == '-');

	if (!*digits || strspn(digits, "0123456789") != strlen(digits))
		return -1;
	errno = 0;
	if (*t == '-')
		*v = strtoll(t, NULL, 10);
	else
		*v = (long long)strtoull(t, NULL, 10);
	return errno ? -1 : 0;
}

static int is_word(const char *t)
{
	return *t && strncmp(t, "x:", 2) != 0 && strncmp(t, "s:", 2) != 0 &&
	       strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/-") == strlen(t);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_blob(char *t, struct arg *a)
{
	size_t len = strlen(t);
	const unsigned char *shared;
	__u64 pos, n;

	if ((shared = window_blob(t, &pos, &n))) {
		if (!(a->owned = malloc(n + 1)))
			return -1;
		memcpy(a->owned, shared, n);
		a->b = a->owned;
		a->n = n;
		return 0;
	}
	if (strncmp(t, "x:", 2) != 0 || len % 2)
		return -1;
	a->b = (unsigned char *)t;
	a->n = (len - 2) / 2;
	for (size_t i = 0; i < a->n; i++) {
		int hi = hexval(t[2 + 2 * i]), lo = hexval(t[3 + 2 * i]);

		if (hi < 0 || lo < 0)
			return -1;
		a->b[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* spec: one char per argument: 'i' integer, 'w' word, 'b' blob; a final '*'
 * accepts more tokens for the verb to read in a[].s (a[ntok].s is NULL); those
 * that are blobs are decoded here (a[].b), while the shared window holds them. */
static int parse_args(struct reply *r, const char *verb, const char *spec,
		      char **tok, int ntok, struct arg *a)
{
	static const char *kind[] = {['i'] = "an integer", ['w'] = "a word", ['b'] = "a blob"};
	int fixed = (int)strcspn(spec, "*"), more = spec[fixed] == '*';

	if (more ? ntok < fixed : ntok != fixed)
		return reply_err(r, "bad request: '%s' takes %s%d arguments, got %d", verb,
				 more ? "at least " : "", fixed, ntok);
	for (int i = fixed; i < ntok; i++) {
		__u64 pos, n;

		a[i].s = tok[i];
		if ((!strncmp(tok[i], "x:", 2) || window_blob(tok[i], &pos, &n)) &&
		    parse_blob(tok[i], &a[i]))
			return reply_err(r, "bad request: argument %d of '%s' is a bad blob", i + 1, verb);
	}
	for (int i = 0; i < fixed; i++) {
		int bad = spec[i] == 'i' ? parse_int(tok[i], &a[i].i)
			: spec[i] == 'w' ? !is_word(tok[i]) : parse_blob(tok[i], &a[i]);

		if (bad)
			return reply_err(r, "bad request: argument %d of '%s' must be %s", i + 1, verb,
					 kind[(int)spec[i]]);
		a[i].s = tok[i];
	}
	return 0;
}

/* ------------------------------------------------------------ BPF_PROG_LOAD interception */

/* What __wrap_syscall saw of the target's load. Global: a wrapped syscall has
 * no context argument, and libbpf's print callback neither. */
struct capture {
	char target[BPF_OBJ_NAME_LEN];   /* prog_name as libbpf sends it; "" = off */
	int seen, no_line_info;
	struct buf insns, line_info, func_info;
	__u32 line_info_rec_size, func_info_rec_size;
};

static struct capture g_cap;
static struct buf g_libbpf_log;   /* libbpf warnings of the current load */

long __real_syscall(long nr, ...);

static void capture_copy(struct buf *b, __u64 ptr, size_t n)
{
	b->len = 0;
	buf_add(b, PTR(ptr), ptr ? n : 0);
}

/* One record per instruction (not the 2nd slot of ld_imm64), line_col = index. */
static struct bpf_line_info *synthetic_lines(const struct bpf_insn *insns, __u32 cnt,
					     const struct bpf_line_info *first, __u32 *n)
{
	struct bpf_line_info *lines = calloc(cnt ? cnt : 1, sizeof(*lines));

	*n = 0;
	for (__u32 i = 0; lines && i < cnt; i++) {
		lines[*n] = *first;
		lines[*n].insn_off = lines[*n].line_col = i;
		(*n)++;
		if (insns[i].code == (BPF_LD | BPF_IMM | BPF_DW))
			i++;
	}
	return lines;
}

static long load_with_synthetic_lines(union bpf_attr *attr, const long *a)
{
	__u64 line_info = attr->line_info;
	__u32 cnt = attr->line_info_cnt, rec_size = attr->line_info_rec_size, n;
	struct bpf_line_info *lines;
	long ret;
	int saved_errno;

	g_cap.seen = 1;
	if (!cnt || !line_info || rec_size < sizeof(*lines)) {
		g_cap.no_line_info = 1;
		errno = EINVAL;
		return -1;
	}
	capture_copy(&g_cap.insns, attr->insns, (size_t)attr->insn_cnt * sizeof(struct bpf_insn));
	capture_copy(&g_cap.line_info, line_info, (size_t)cnt * rec_size);
	g_cap.line_info_rec_size = rec_size;
	capture_copy(&g_cap.func_info, attr->func_info, (size_t)attr->func_info_cnt * attr->func_info_rec_size);
	g_cap.func_info_rec_size = attr->func_info_rec_size;

	lines = synthetic_lines(PTR(attr->insns), attr->insn_cnt, PTR(line_info), &n);
	if (!lines) {
		errno = ENOMEM;
		return -1;
	}
	attr->line_info = (uintptr_t)lines;
	attr->line_info_cnt = n;
	attr->line_info_rec_size = sizeof(*lines);
	ret = __real_syscall(__NR_bpf, a[0], a[1], a[2], a[3], a[4], a[5]);
	saved_errno = errno;
	attr->line_info = line_info;   /* libbpf may retry with the same attr */
	attr->line_info_cnt = cnt;
	attr->line_info_rec_size = rec_size;
	free(lines);
	errno = saved_errno;
	return ret;
}

long __wrap_syscall(long nr, ...)
{
	union bpf_attr *attr;
	va_list ap;
	long a[6];

	va_start(ap, nr);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	attr = (union bpf_attr *)a[1];
	if (nr == __NR_bpf && a[0] == BPF_PROG_LOAD && g_cap.target[0] &&
	    (unsigned long)a[2] >= offsetofend(union bpf_attr, line_info_cnt) &&
	    strncmp(attr->prog_name, g_cap.target, BPF_OBJ_NAME_LEN) == 0)
		return load_with_synthetic_lines(attr, a);
	return __real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_WARN)
		buf_vprintf(&g_libbpf_log, fmt, ap);
	return 0;
}

/* ------------------------------------------------------------ handles */

/* A perf buffer on a perf event array of a loaded object, opened at load as a
 * real loader would: bpf_perf_event_output then has somewhere to write, and
 * `dump` shows the records. */
#define MAX_PERF_READERS 8
#define PERF_PAGES 8                 /* per CPU */
#define PERF_PENDING_MAX (16u << 20)

struct perf_reader {
	__u32 map_id;
	struct perf_buffer *pb;
	struct buf pending;          /* u32 size, then the bytes, per record */
	long long lost;              /* records the kernel or the agent dropped */
};

struct handle {
	struct bpf_object *obj;
	struct bpf_program *prog;
	void *elf;   /* libbpf keeps pointing into the bytes given to open_mem */
	struct capture cap;
	struct perf_reader perf[MAX_PERF_READERS];
	size_t n_perf;
};

/* ------------------------------------------------------------ probe state (docs/probes.md) */

#define MAX_PROBES 64            /* probe ids 0..63 own 8 counters each */
#define COUNTERS_ENTRIES 512
#define PENDING_MAX (64u << 20)  /* drained records kept for one probe_drain */
#define PROBE_LOG_SIZE (16u << 20)
#define NO_SLOT_MSG "no free hardware breakpoint slot (x86 has 4 debug registers)"

struct probe {
	int handle;                  /* 0: a free slot */
	int perf_fd, prog_fd;
};

struct probes {
	int ready;                   /* probe_setup done: the fds and rb are valid */
	int events_fd, counters_fd;  /* qstep_events (ring buffer), qstep_counters */
	struct ring_buffer *rb;
	struct buf pending;          /* consumed records: u32 size, then the bytes */
	long long lost;              /* records not kept since the last drain */
	struct probe slot[MAX_PROBES];
	int last_handle;             /* probe handles are never reused */
};

struct agent {
	struct handle **h;   /* handle N is h[N - 1]; ids are never reused */
	size_t n;
	struct probes probes;
};

static void handle_free(struct handle *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n_perf; i++) {
		perf_buffer__free(h->perf[i].pb);
		buf_free(&h->perf[i].pending);
	}
	bpf_object__close(h->obj);
	free(h->elf);
	buf_free(&h->cap.insns);
	buf_free(&h->cap.line_info);
	buf_free(&h->cap.func_info);
	free(h);
}

static struct handle *get_handle(struct agent *ag, struct reply *r, long long id)
{
	if (id < 1 || (size_t)id > ag->n || !ag->h[id - 1]) {
		reply_err(r, "unknown handle %lld", id);
		return NULL;
	}
	return ag->h[id - 1];
}

static struct bpf_map *get_map(struct agent *ag, struct reply *r, long long id, const char *name)
{
	struct handle *h = get_handle(ag, r, id);
	struct bpf_map *m = h ? bpf_object__find_map_by_name(h->obj, name) : NULL;

	if (h && (!m || bpf_map__fd(m) < 0)) {
		reply_err(r, "unknown map '%s'", name);
		return NULL;
	}
	return m;
}

/* Opens a private copy of the object, with autoload on for `name` only. */
static struct handle *handle_open(struct reply *r, const struct arg *elf, const char *name)
{
	/* a fixed object name keeps internal map names stable: "qstep.bss" */
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = "qstep");
	struct handle *h = calloc(1, sizeof(*h));
	struct buf names = {0};
	struct bpf_program *p;

	if (!h || !(h->elf = malloc(elf->n + 1))) {
		free(h);
		reply_err(r, "out of memory");
		return NULL;
	}
	memcpy(h->elf, elf->b, elf->n);
	g_libbpf_log.len = 0;
	if (!(h->obj = bpf_object__open_mem(h->elf, elf->n, &opts))) {
		int err = errno;

		if (g_libbpf_log.len)
			reply_blob(r, "libbpf_log", g_libbpf_log.p, g_libbpf_log.len);
		reply_err(r, "cannot open BPF object: %s", strerror(err));
		handle_free(h);
		return NULL;
	}
	bpf_object__for_each_program(p, h->obj) {
		int match = strcmp(bpf_program__name(p), name) == 0;

		bpf_program__set_autoload(p, match);
		h->prog = match ? p : h->prog;
		buf_printf(&names, "%s%s", names.len ? ", " : "", bpf_program__name(p));
	}
	if (!h->prog) {
		reply_err(r, "unknown program '%s'; available: %s", name, names.len ? names.p : "(none)");
		handle_free(h);
		h = NULL;
	}
	buf_free(&names);
	return h;
}

/* Loads with the interception armed; returns 0 or a negative errno. */
static int handle_load(struct handle *h, char *log, size_t log_size, __u32 log_level)
{
	int err;

	log[0] = '\0';
	bpf_program__set_log_buf(h->prog, log, log_size);
	bpf_program__set_log_level(h->prog, log_level);
	g_libbpf_log.len = 0;
	memset(&g_cap, 0, sizeof(g_cap));
	snprintf(g_cap.target, sizeof(g_cap.target), "%s", bpf_program__name(h->prog));
	err = bpf_object__load(h->obj);
	g_cap.target[0] = '\0';
	h->cap = g_cap;   /* the handle owns the captured buffers now */
	memset(&g_cap, 0, sizeof(g_cap));
	return err;
}

/* ------------------------------------------------------------ verbs */

static int do_hello(struct agent *ag, struct reply *r, struct arg *a)
{
	struct utsname u;

	(void)ag, (void)a;
	uname(&u);
	reply_int(r, "version", PROTOCOL_VERSION);
	reply_word(r, "kernel", u.release);
	return 0;
}

/* What libbpf submitted: the verifier log's instruction indices refer to it. */
static void report_capture(struct reply *r, const struct capture *cap)
{
	reply_blob(r, "insns", cap->insns.p, cap->insns.len);
	reply_int(r, "line_info_rec_size", cap->line_info_rec_size);
	reply_blob(r, "line_info", cap->line_info.p, cap->line_info.len);
	reply_int(r, "func_info_rec_size", cap->func_info_rec_size);
	reply_blob(r, "func_info", cap->func_info.p, cap->func_info.len);
}

static int report_load_error(struct reply *r, struct handle *h, int err, const char *log)
{
	if (h->cap.no_line_info)
		return reply_err(r, "object has no BTF line info; build it with clang -g");
	if (h->cap.seen)
		report_capture(r, &h->cap);
	if (log[0])
		reply_log(r, "log", log, strlen(log));
	if (g_libbpf_log.len)
		reply_blob(r, "libbpf_log", g_libbpf_log.p, g_libbpf_log.len);
	return reply_err(r, "loading program '%s' failed: %s%s", bpf_program__name(h->prog),
			 strerror(-err), err == -ENOSPC ? " (verifier log truncated)" :
			 log[0] ? " (see verifier log)" : "");
}

static void reply_map_line(struct reply *r, const char *name, const struct bpf_map_info *info)
{
	reply_line(r, "map", "%s %u %u %u %u %u %u %u", name, info->id, info->type, info->key_size,
		   info->value_size, info->max_entries, info->btf_key_type_id, info->btf_value_type_id);
}

static void report_map(struct reply *r, struct bpf_map *m)
{
	struct bpf_map_info info = {0};
	__u32 len = sizeof(info);
	const char *name = bpf_map__name(m), *dot = strchr(name, '.');

	if (bpf_map__fd(m) < 0 || bpf_obj_get_info_by_fd(bpf_map__fd(m), &info, &len))
		return;
	if (bpf_map__is_internal(m) && dot)   /* "qstep.bss" -> ".bss", its ELF section */
		name = dot;
	reply_map_line(r, name, &info);
}

static void perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct perf_reader *pr = ctx;

	(void)cpu;
	records_keep(&pr->pending, &pr->lost, PERF_PENDING_MAX, data, size);
}

static void perf_lost(void *ctx, int cpu, __u64 cnt)
{
	(void)cpu;
	((struct perf_reader *)ctx)->lost += (long long)cnt;
}

static __u32 map_id_of(int fd);

/* Perf buffers on the object's perf event arrays (best effort: a map without
 * one is dumped as unlisted). */
static void open_perf_readers(struct handle *h)
{
	struct bpf_map *m;

	bpf_object__for_each_map(m, h->obj) {
		struct perf_reader *pr = &h->perf[h->n_perf];

		if (bpf_map__type(m) != BPF_MAP_TYPE_PERF_EVENT_ARRAY || bpf_map__fd(m) < 0 ||
		    h->n_perf == MAX_PERF_READERS)
			continue;
		pr->pb = perf_buffer__new(bpf_map__fd(m), PERF_PAGES, perf_sample, perf_lost, pr, NULL);
		if (pr->pb) {
			pr->map_id = map_id_of(bpf_map__fd(m));
			h->n_perf++;
		}
	}
}

static void report_load(struct reply *r, struct handle *h, size_t id, __u32 prog_id)
{
	struct bpf_map *m;

	reply_int(r, "handle", (long long)id);
	reply_int(r, "prog_id", prog_id);
	reply_int(r, "prog_type", bpf_program__type(h->prog));
	report_capture(r, &h->cap);
	bpf_object__for_each_map(m, h->obj)
		report_map(r, m);
}

/* The options of `load` after the object and the program name. */
#define MAX_INITIAL_VALUES 8
#define MAX_ALSO 8

struct load_opts {
	long long prog_type, attach_type;   /* -1: libbpf's choice from the section name */
	long long log_level, log_size;      /* verbose_log: the verifier's log, also on success */
	size_t n_init;
	struct {
		const char *map;
		const struct arg *data;   /* the request's argument */
	} init[MAX_INITIAL_VALUES];
	size_t n_also;
	const char *also[MAX_ALSO];   /* more programs to load: tail-call targets */
};

/* prog_type N | attach_type N | initial_value <map> <blob> | verbose_log LEVEL SIZE |
 * also <prog>, in any order. */
static int parse_load_opts(struct reply *r, struct arg *a, struct load_opts *o)
{
	o->prog_type = o->attach_type = -1;
	o->log_level = o->log_size = 0;
	o->n_init = o->n_also = 0;
	for (size_t i = 0; a[i].s; i++) {
		const char *opt = a[i].s;
		long long *num = !strcmp(opt, "prog_type") ? &o->prog_type :
				 !strcmp(opt, "attach_type") ? &o->attach_type : NULL;

		if (num) {
			if (!a[i + 1].s || parse_int(a[++i].s, num) || *num < 0 || *num > INT32_MAX)
				return reply_err(r, "bad request: %s takes a non-negative integer", opt);
			continue;
		}
		if (!strcmp(opt, "verbose_log")) {
			/* The kernel caps log_size at UINT_MAX >> 2. */
			if (!a[i + 1].s || !a[i + 2].s || parse_int(a[i + 1].s, &o->log_level) ||
			    parse_int(a[i + 2].s, &o->log_size) || o->log_level < 1 ||
			    o->log_level > 2 || o->log_size < 1024 || o->log_size > (UINT_MAX >> 2))
				return reply_err(r, "bad request: verbose_log takes a level (1 or 2) and a "
						 "size (1 KiB .. 1 GiB)");
			i += 2;
			continue;
		}
		if (!strcmp(opt, "also")) {
			if (o->n_also == MAX_ALSO || !a[i + 1].s || !is_word(a[i + 1].s))
				return reply_err(r, "bad request: also takes a program name (at most "
						 "%d)", MAX_ALSO);
			o->also[o->n_also++] = a[++i].s;
			continue;
		}
		if (strcmp(opt, "initial_value"))
			return reply_err(r, "bad request: unknown load option '%.64s'", opt);
		if (o->n_init == MAX_INITIAL_VALUES || !a[i + 1].s || !a[i + 2].s ||
		    !is_word(a[i + 1].s) || !a[i + 2].b)
			return reply_err(r, "bad request: initial_value takes a map name and a blob "
					 "(at most %d)", MAX_INITIAL_VALUES);
		o->init[o->n_init].data = &a[i + 2];
		o->init[o->n_init++].map = a[i + 1].s;
		i += 2;
	}
	return 0;
}

/* Applies the options to an opened handle; replies err on failure. */
static int apply_load_opts(struct reply *r, struct handle *h, const struct load_opts *o)
{
	if (o->prog_type >= 0 && bpf_program__set_type(h->prog, (enum bpf_prog_type)o->prog_type))
		return reply_err(r, "cannot set program type %lld", o->prog_type);
	if (o->attach_type >= 0 &&
	    bpf_program__set_expected_attach_type(h->prog, (enum bpf_attach_type)o->attach_type))
		return reply_err(r, "cannot set attach type %lld", o->attach_type);
	for (size_t i = 0; i < o->n_also; i++) {
		/* Loaded with it (libbpf fills a prog array initialised with them), as is. */
		struct bpf_program *p = bpf_object__find_program_by_name(h->obj, o->also[i]);

		if (!p)
			return reply_err(r, "unknown program '%s' (also)", o->also[i]);
		bpf_program__set_autoload(p, true);
		if (o->prog_type >= 0)
			bpf_program__set_type(p, (enum bpf_prog_type)o->prog_type);
	}
	for (size_t i = 0; i < o->n_init; i++) {
		struct bpf_map *m = bpf_object__find_map_by_name(h->obj, o->init[i].map);
		size_t size = 0;

		if (!m || !bpf_map__initial_value(m, &size))
			return reply_err(r, "map '%s' has no initial value to set (global data "
					 "sections: .rodata, .data, .bss)", o->init[i].map);
		if (size != o->init[i].data->n)
			return reply_err(r, "initial value of '%s' must be %zu bytes, got %zu",
					 o->init[i].map, size, o->init[i].data->n);
		if (bpf_map__set_initial_value(m, o->init[i].data->b, size))
			return reply_err(r, "cannot set the initial value of '%s'", o->init[i].map);
	}
	if (bpf_program__type(h->prog) == BPF_PROG_TYPE_UNSPEC)
		return reply_err(r, "program '%s': libbpf knows no program type for its section "
				 "'%s'; give the program type", bpf_program__name(h->prog),
				 bpf_program__section_name(h->prog));
	return 0;
}

/* Log level 1 first. A log that does not fit fails the load with ENOSPC, even
 * for a correct program; then load again at level 0 with a buffer large enough
 * for any log (1M processed insns): if that load fails, libbpf repeats it at
 * level 1 into our buffer, so the host gets the whole log. The kernel writes
 * only what it logs: the untouched pages of the buffer are never allocated. */
static const struct load_attempt {
	__u32 log_level;
	size_t log_size;
} load_attempts[] = {{1, 16u << 20}, {0, 256u << 20}};

static int do_load(struct agent *ag, struct reply *r, struct arg *a)
{
	struct handle *h = NULL, **handles = NULL;
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);
	struct load_opts opts;
	char *log = NULL;
	int err = -ENOSPC;

	if (parse_load_opts(r, &a[2], &opts))
		return -1;
	/* verbose_log: one attempt at the asked level; a log over the size fails the load
	 * (ENOSPC) and the host says so. */
	const struct load_attempt verbose = {(__u32)opts.log_level, (size_t)opts.log_size};
	const struct load_attempt *attempts = opts.log_level ? &verbose : load_attempts;
	size_t n_attempts = opts.log_level ? 1 : 2;

	for (size_t i = 0; i < n_attempts && err == -ENOSPC; i++) {
		handle_free(h);
		free(log);
		if (!(log = malloc(attempts[i].log_size)))
			return reply_err(r, "out of memory");
		if (!(h = handle_open(r, &a[0], a[1].s)) || apply_load_opts(r, h, &opts)) {
			handle_free(h);
			free(log);
			return -1;
		}
		err = handle_load(h, log, attempts[i].log_size, attempts[i].log_level);
	}
	if (!err && opts.log_level)
		reply_blob(r, "verbose_log", log, strlen(log));
	if (err)
		report_load_error(r, h, err, log);
	else if (!h->cap.seen)   /* e.g. libbpf did not send a prog_name */
		err = reply_err(r, "internal: the BPF_PROG_LOAD of '%s' was not intercepted", a[1].s);
	else if (bpf_obj_get_info_by_fd(bpf_program__fd(h->prog), &info, &len))
		err = reply_err(r, "bpf_obj_get_info_by_fd: %s", strerror(errno));
	else if (!(handles = realloc(ag->h, (ag->n + 1) * sizeof(*ag->h))))
		err = reply_err(r, "out of memory");
	free(log);
	if (err) {
		handle_free(h);
		return -1;
	}
	ag->h = handles;
	ag->h[ag->n++] = h;
	open_perf_readers(h);
	report_load(r, h, ag->n, info.id);
	return 0;
}

/* The arrays of bpf_prog_info reported by `info` (and `info_id`), in reply order. */
static const struct info_array {
	const char *key;
	size_t nr, ptr;   /* offsets of the element count and of the pointer field */
	__u32 size;       /* bytes per element */
	int id_only;      /* reported by info_id only */
} info_arrays[] = {
#define ARRAY(key, nr, ptr, size, id_only) \
	{key, offsetof(struct bpf_prog_info, nr), offsetof(struct bpf_prog_info, ptr), size, id_only}
	ARRAY("xlated", xlated_prog_len, xlated_prog_insns, 1, 0),
	ARRAY("jited", jited_prog_len, jited_prog_insns, 1, 0),
	ARRAY("jited_ksyms", nr_jited_ksyms, jited_ksyms, sizeof(__u64), 0),
	ARRAY("jited_func_lens", nr_jited_func_lens, jited_func_lens, sizeof(__u32), 0),
	ARRAY("kline_info", nr_line_info, line_info, sizeof(struct bpf_line_info), 0),
	ARRAY("jited_line_info", nr_jited_line_info, jited_line_info, sizeof(__u64), 0),
	ARRAY("map_ids", nr_map_ids, map_ids, sizeof(__u32), 0),
	ARRAY("func_info", nr_func_info, func_info, sizeof(struct bpf_func_info), 1),
#undef ARRAY
};
#define N_INFO_ARRAYS (sizeof(info_arrays) / sizeof(info_arrays[0]))
#define INFO_FIELD(info, off, type) (*(type *)((char *)(info) + (off)))

/* A program's bpf_prog_info with its arrays. */
struct prog_info {
	struct bpf_prog_info info;
	void *bufs[N_INFO_ARRAYS];
	size_t n[N_INFO_ARRAYS];   /* elements received */
};

static void prog_info_free(struct prog_info *pi)
{
	for (size_t i = 0; i < N_INFO_ARRAYS; i++)
		free(pi->bufs[i]);
	memset(pi, 0, sizeof(*pi));
}

/* Two passes: the counts, then the arrays. Returns 0 or errno. */
static int prog_info_get(int fd, struct prog_info *pi)
{
	struct bpf_prog_info counts = {0};
	__u32 len = sizeof(counts), want[N_INFO_ARRAYS];
	struct bpf_prog_info *info = &pi->info;

	memset(pi, 0, sizeof(*pi));
	if (bpf_obj_get_info_by_fd(fd, &counts, &len))
		return errno;
	for (size_t i = 0; i < N_INFO_ARRAYS; i++) {
		const struct info_array *ia = &info_arrays[i];

		want[i] = INFO_FIELD(&counts, ia->nr, __u32);
		pi->bufs[i] = calloc(want[i] + 1, ia->size);
		INFO_FIELD(info, ia->nr, __u32) = want[i];
		INFO_FIELD(info, ia->ptr, __u64) = (uintptr_t)pi->bufs[i];
	}
	info->line_info_rec_size = sizeof(struct bpf_line_info);
	info->jited_line_info_rec_size = sizeof(__u64);
	info->func_info_rec_size = sizeof(struct bpf_func_info);
	len = sizeof(*info);
	if (bpf_obj_get_info_by_fd(fd, info, &len)) {
		int err = errno;

		prog_info_free(pi);
		return err;
	}
	for (size_t i = 0; i < N_INFO_ARRAYS; i++)
		pi->n[i] = MIN(want[i], INFO_FIELD(info, info_arrays[i].nr, __u32));
	return 0;
}

/* The lines of `info`; with_id_only adds those of `info_id` (func_info). */
static void reply_prog_info(struct reply *r, const struct prog_info *pi, const char *name,
			    int with_id_only)
{
	const struct bpf_prog_info *info = &pi->info;

	reply_int(r, "id", info->id);
	reply_int(r, "type", info->type);
	reply_word(r, "name", info->name[0] ? info->name : name);
	reply_blob(r, "tag", info->tag, sizeof(info->tag));
	for (size_t i = 0; i < N_INFO_ARRAYS; i++) {
		const struct info_array *ia = &info_arrays[i];

		if (ia->id_only && !with_id_only)
			continue;
		if (ia->nr == offsetof(struct bpf_prog_info, nr_line_info))
			reply_int(r, "kline_info_rec_size", info->line_info_rec_size);
		if (ia->nr == offsetof(struct bpf_prog_info, nr_func_info))
			reply_int(r, "func_info_rec_size", info->func_info_rec_size);
		reply_blob(r, ia->key, pi->bufs[i], pi->n[i] * ia->size);
	}
}

static int do_info(struct agent *ag, struct reply *r, struct arg *a)
{
	struct handle *h = get_handle(ag, r, a[0].i);
	struct prog_info pi;
	int err;

	if (!h)
		return -1;
	if ((err = prog_info_get(bpf_program__fd(h->prog), &pi)))
		return reply_err(r, "bpf_obj_get_info_by_fd: %s", strerror(err));
	reply_prog_info(r, &pi, bpf_program__name(h->prog), 0);
	prog_info_free(&pi);
	return 0;
}

static int is_percpu(enum bpf_map_type t)
{
	return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

/* Size of a value as the map syscalls want it (per-CPU maps: all CPUs). */
static size_t value_buf_size(enum bpf_map_type type, __u32 value_size)
{
	int ncpus;

	if (!is_percpu(type))
		return value_size;
	ncpus = libbpf_num_possible_cpus();
	return (((size_t)value_size + 7) & ~(size_t)7) * (size_t)(ncpus > 0 ? ncpus : 1);
}

/* What `dump` needs to know of a map, whether it came from an object or by id. */
struct map_view {
	int fd;
	enum bpf_map_type type;
	__u32 key_size, max_entries;
	size_t vsize;       /* bytes per value as the syscalls want it */
	char label[64];     /* for messages: "'counts'" or "id 17" */
	struct perf_reader *perf;   /* perf event arrays of a loaded object */
};

static void view_of_map(struct map_view *v, struct bpf_map *m, const char *name)
{
	v->fd = bpf_map__fd(m);
	v->type = bpf_map__type(m);
	v->key_size = bpf_map__key_size(m);
	v->max_entries = bpf_map__max_entries(m);
	v->vsize = value_buf_size(v->type, bpf_map__value_size(m));
	snprintf(v->label, sizeof(v->label), "'%s'", name);
}

static int do_update(struct agent *ag, struct reply *r, struct arg *a)
{
	struct bpf_map *m = get_map(ag, r, a[0].i, a[1].s);
	size_t vsize;

	if (!m)
		return -1;
	vsize = value_buf_size(bpf_map__type(m), bpf_map__value_size(m));
	if (a[2].n != bpf_map__key_size(m) || a[3].n != vsize)
		return reply_err(r, "map '%s' takes %u-byte keys and %zu-byte values, got %zu and %zu",
				 a[1].s, bpf_map__key_size(m), vsize, a[2].n, a[3].n);
	if (bpf_map_update_elem(bpf_map__fd(m), a[2].b, a[3].b, BPF_ANY))
		return reply_err(r, "update of map '%s': %s", a[1].s, strerror(errno));
	return 0;
}

/* errno as text; the kernel-internal ENOTSUPP (524) has no libc name. */
static const char *errno_text(int err)
{
	return err == 524 ? "not supported for this map type (ENOTSUPP)" : strerror(err);
}

/* The terminal line of a listing that cannot go on: the entries sent stay valid. */
static int reply_unlisted(struct reply *r, const char *fmt, ...)
{
	struct buf why = {0};
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&why, fmt, ap);
	va_end(ap);
	reply_blob(r, "unlisted", why.p, why.len);
	buf_free(&why);
	return 0;
}

static void reply_entry(struct reply *r, const void *key, size_t key_size, const void *val,
			size_t vsize)
{
	reply_head(r, "entry");
	reply_hex(r, key, key_size);
	reply_hex(r, val, vsize);
	reply_end_line(r);
}

/* One `entry` line unless the key vanished; 1 if the value cannot be read
 * (`unlisted` sent), else 0. */
static int dump_entry(struct reply *r, const struct map_view *m, const void *key, void *val)
{
	if (bpf_map_lookup_elem(m->fd, key, val)) {
		if (errno == ENOENT)
			return 0;
		reply_unlisted(r, "its values cannot be read from user space: %s", errno_text(errno));
		return 1;
	}
	reply_entry(r, key, m->key_size, val, m->vsize);
	return 0;
}

/* Arrays up to DUMP_MAX_ENTRIES: every index. */
static void dump_small_array(struct reply *r, const struct map_view *m, void *val)
{
	for (__u32 i = 0; i < m->max_entries; i++)
		if (dump_entry(r, m, &i, val))
			return;
}

/* Larger arrays: read in batches, send the non-zero entries only (at most
 * DUMP_MAX_ENTRIES, for at most DUMP_BUDGET_MS), then `zero_entries N` (all-zero
 * values among those read), `read_entries N` and, if the listing stopped early,
 * `truncated 1`. */
#define BATCH 16384
#define DUMP_BUDGET_MS 20000
static long long now_ms(void);

static void dump_big_array(struct reply *r, const struct map_view *m)
{
	long long deadline = now_ms() + DUMP_BUDGET_MS;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 *keys = calloc(BATCH, sizeof(*keys)), next = 0, count;
	unsigned char *vals = calloc(BATCH, m->vsize), *zero = calloc(1, m->vsize);
	unsigned long long read = 0, zeros = 0, sent = 0;
	int err = 0;

	while (!err && read < m->max_entries && sent < DUMP_MAX_ENTRIES && now_ms() < deadline) {
		__u32 in = next;

		count = BATCH;
		err = bpf_map_lookup_batch(m->fd, read ? &in : NULL, &next, keys, vals, &count, &opts);
		err = err && errno != ENOENT ? errno : 0;
		if (err || !count)
			break;
		for (__u32 i = 0; i < count && sent < DUMP_MAX_ENTRIES; i++, read++) {
			const void *v = vals + (size_t)i * m->vsize;

			if (!memcmp(v, zero, m->vsize))
				zeros++;
			else
				reply_entry(r, &keys[i], sizeof(*keys), v, m->vsize), sent++;
		}
	}
	reply_int(r, "zero_entries", (long long)zeros);
	reply_int(r, "read_entries", (long long)read);
	if (err)
		reply_unlisted(r, "reading it in batches failed after %llu entries: %s", read,
			       errno_text(err));
	else if (read < m->max_entries)
		reply_int(r, "truncated", 1);
	free(keys), free(vals), free(zero);
}

/* Hash-like maps: by key. */
static void dump_by_key(struct reply *r, const struct map_view *m, void *val)
{
	unsigned char *key = calloc(1, m->key_size + 4), *next = calloc(1, m->key_size + 4);
	void *prev = NULL;
	size_t count = 0;

	for (;;) {
		if (bpf_map_get_next_key(m->fd, prev, next)) {
			if (errno != ENOENT)
				reply_unlisted(r, "it cannot be iterated: %s", errno_text(errno));
			break;
		}
		if (count++ == DUMP_MAX_ENTRIES) {
			reply_int(r, "truncated", 1);
			break;
		}
		memcpy(key, next, m->key_size);
		prev = key;
		if (dump_entry(r, m, key, val))
			break;
	}
	free(key), free(next);
}

/* Queue and stack maps: pop every value, push them back in the same order;
 * `entry x: <value>` in pop order (the next value the program would pop first). */
static void dump_queue(struct reply *r, const struct map_view *m, void *val)
{
	struct buf vals = {0};
	size_t n = 0, failed = 0;
	int err;

	while (n < m->max_entries && !bpf_map_lookup_and_delete_elem(m->fd, NULL, val)) {
		buf_add(&vals, val, m->vsize);
		n++;
	}
	err = n < m->max_entries && errno != ENOENT ? errno : 0;
	for (size_t i = 0; i < n; i++) {   /* a stack gets them back top last */
		size_t k = m->type == BPF_MAP_TYPE_STACK ? n - 1 - i : i;

		failed += bpf_map_update_elem(m->fd, NULL, vals.p + k * m->vsize, BPF_ANY) != 0;
	}
	for (size_t i = 0; i < n; i++)
		reply_entry(r, "", 0, vals.p + i * m->vsize, m->vsize);
	if (err)
		reply_unlisted(r, "popping its values failed: %s", errno_text(err));
	else if (failed)
		reply_unlisted(r, "%zu of its %zu values could not be pushed back", failed, n);
	buf_free(&vals);
}

/* ring_buffer__consume() callback of dump_ringbuf. */
struct ringbuf_dump {
	struct reply *r;
	size_t n;
};

static int send_record(void *ctx, void *data, size_t size)
{
	struct ringbuf_dump *d = ctx;

	if (d->n++ == DUMP_MAX_ENTRIES)
		return -E2BIG;
	reply_blob(d->r, "record", data, size);
	return 0;
}

/* Ring buffers: `record <blob>` per record written since the last dump (the
 * records are consumed: a later dump shows only newer ones). */
static void dump_ringbuf(struct reply *r, const struct map_view *m)
{
	struct ringbuf_dump d = {r, 0};
	struct ring_buffer *rb = ring_buffer__new(m->fd, send_record, &d, NULL);
	int n;

	if (!rb) {
		reply_unlisted(r, "opening the ring buffer failed: %s", errno_text(errno));
		return;
	}
	n = ring_buffer__consume(rb);
	if (n == -E2BIG)
		reply_int(r, "truncated", 1);
	else if (n < 0)
		reply_unlisted(r, "reading the ring buffer failed: %s", errno_text(-n));
	ring_buffer__free(rb);
}

/* `record <blob>` per kept record, then `lost N`; both are reset. */
static void reply_records(struct reply *r, struct buf *pending, long long *lost)
{
	for (size_t off = 0; off < pending->len;) {
		__u32 size;

		memcpy(&size, pending->p + off, sizeof(size));
		reply_blob(r, "record", pending->p + off + sizeof(size), size);
		off += sizeof(size) + size;
	}
	reply_int(r, "lost", *lost);
	pending->len = 0;
	*lost = 0;
}

/* Perf event arrays: `record <blob>` per record since the last dump (from the
 * perf buffers opened at load), then `lost N`. */
static void dump_perf(struct reply *r, struct perf_reader *pr)
{
	int err;

	if (!pr) {
		reply_unlisted(r, "a perf event array holds perf events; its output reaches only "
			       "the perf buffers of a reader, and qstep opened none for it");
		return;
	}
	if ((err = perf_buffer__consume(pr->pb)) < 0)
		reply_unlisted(r, "reading its perf buffers failed: %s", errno_text(-err));
	reply_records(r, &pr->pending, &pr->lost);
}

static int dump_map(struct reply *r, const struct map_view *m)
{
	unsigned char *val = calloc(1, m->vsize + 1);

	reply_int(r, "value_size", (long long)m->vsize);
	switch (m->type) {
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
		if (m->max_entries <= DUMP_MAX_ENTRIES)
			dump_small_array(r, m, val);
		else
			dump_big_array(r, m);
		break;
	case BPF_MAP_TYPE_QUEUE:
	case BPF_MAP_TYPE_STACK:
		dump_queue(r, m, val);
		break;
	case BPF_MAP_TYPE_RINGBUF:
		dump_ringbuf(r, m);
		break;
	case BPF_MAP_TYPE_BLOOM_FILTER:
		reply_unlisted(r, "a bloom filter answers membership queries only");
		break;
	case BPF_MAP_TYPE_USER_RINGBUF:
		reply_unlisted(r, "a user ring buffer is written by user space, not by the program");
		break;
	case BPF_MAP_TYPE_PERF_EVENT_ARRAY:
		dump_perf(r, m->perf);
		break;
	case BPF_MAP_TYPE_UNSPEC:
		reply_unlisted(r, "qstep's probe ring buffer is read with probe_drain");
		break;
	default:
		if (m->key_size)
			dump_by_key(r, m, val);
		else
			reply_unlisted(r, "a map of type %u has no keys to list", m->type);
	}
	free(val);
	return 0;
}

/* The perf buffer reader of a map of an object qstep loaded, if any. */
static struct perf_reader *perf_reader_of(struct agent *ag, __u32 map_id)
{
	for (size_t i = 0; i < ag->n; i++)
		for (size_t k = 0; ag->h[i] && k < ag->h[i]->n_perf; k++)
			if (ag->h[i]->perf[k].map_id == map_id)
				return &ag->h[i]->perf[k];
	return NULL;
}

static int do_dump(struct agent *ag, struct reply *r, struct arg *a)
{
	struct bpf_map *m = get_map(ag, r, a[0].i, a[1].s);
	struct map_view v = {0};

	if (!m)
		return -1;
	view_of_map(&v, m, a[1].s);
	v.perf = perf_reader_of(ag, map_id_of(v.fd));
	return dump_map(r, &v);
}

static int do_dump_id(struct agent *ag, struct reply *r, struct arg *a)
{
	struct bpf_map_info info = {0};
	__u32 len = sizeof(info);
	struct map_view v = {0};
	int err;

	if (a[0].i <= 0 || a[0].i > UINT32_MAX)
		return reply_err(r, "no map with id %lld", a[0].i);
	if ((v.fd = bpf_map_get_fd_by_id((__u32)a[0].i)) < 0)
		return reply_err(r, "no map with id %lld: %s", a[0].i, strerror(errno));
	if (bpf_obj_get_info_by_fd(v.fd, &info, &len)) {
		err = reply_err(r, "map id %lld: bpf_obj_get_info_by_fd: %s", a[0].i, strerror(errno));
	} else {
		v.type = info.type;
		v.key_size = info.key_size;
		v.max_entries = info.max_entries;
		v.vsize = value_buf_size(v.type, info.value_size);
		snprintf(v.label, sizeof(v.label), "id %u", info.id);
		v.perf = perf_reader_of(ag, info.id);
		if (ag->probes.ready && info.id == map_id_of(ag->probes.events_fd))
			v.type = BPF_MAP_TYPE_UNSPEC;   /* not to be consumed here */
		err = dump_map(r, &v);
	}
	close(v.fd);
	return err;
}

/* update_id <map_id> <key> <value>: write one entry of any map by kernel id. */
static int do_update_id(struct agent *ag, struct reply *r, struct arg *a)
{
	int fd, err = 0;

	(void)ag;
	if (a[0].i <= 0 || a[0].i > UINT32_MAX)
		return reply_err(r, "no map with id %lld", a[0].i);
	if ((fd = bpf_map_get_fd_by_id((__u32)a[0].i)) < 0)
		return reply_err(r, "no map with id %lld: %s", a[0].i, strerror(errno));
	if (bpf_map_update_elem(fd, a[1].b, a[2].b, BPF_ANY))
		err = reply_err(r, "update of map id %lld: %s", a[0].i, strerror(errno));
	close(fd);
	return err;
}

/* ------------------------------------------------------------ program output of a run */

#define PRINTK_CAP (1u << 20)
#define STREAM_CAP (1u << 20)
#define CMD_PROG_STREAM_READ_BY_FD 37   /* kernel 6.17+; not in older headers */

/* The trace_pipe (bpf_printk output), opened once, non-blocking; -1 if none. */
static int trace_pipe_fd(void)
{
	static int fd = -2;

	if (fd == -2 && (fd = open("/sys/kernel/tracing/trace_pipe", O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
		fd = open("/sys/kernel/debug/tracing/trace_pipe", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	return fd;
}

/* Consumes what the trace_pipe holds now; keeps up to PRINTK_CAP bytes in out
 * (NULL: discards). Returns the bytes that did not fit. */
static size_t read_trace_pipe(struct buf *out)
{
	int fd = trace_pipe_fd();
	char chunk[65536];
	size_t lost = 0;
	ssize_t n;

	while (fd >= 0 && (n = read(fd, chunk, sizeof(chunk))) > 0) {
		size_t keep = out ? MIN((size_t)n, PRINTK_CAP - out->len) : 0;

		if (out)
			buf_add(out, chunk, keep);
		lost += (size_t)n - keep;
	}
	return out ? lost : 0;
}

/* BPF_PROG_STREAM_READ_BY_FD's attribute (kernel 6.17+). */
struct stream_read_attr {
	__u64 buf;
	__u32 buf_len, stream_id, prog_fd;
};

/* One BPF stream of a program (1 stdout, 2 stderr): 0, or -1 if the kernel
 * has no streams. Reading consumes. */
static int read_stream(int prog_fd, __u32 stream_id, struct buf *out)
{
	union {
		union bpf_attr zero;   /* the kernel wants the unused tail zeroed */
		struct stream_read_attr sr;
	} attr;
	char *chunk = malloc(65536);
	long n = 0;

	while (chunk && out->len < STREAM_CAP) {
		memset(&attr, 0, sizeof(attr));
		attr.sr.buf = (uintptr_t)chunk;
		attr.sr.buf_len = (__u32)MIN(65536u, STREAM_CAP - out->len);
		attr.sr.stream_id = stream_id;
		attr.sr.prog_fd = (__u32)prog_fd;
		if ((n = syscall(__NR_bpf, CMD_PROG_STREAM_READ_BY_FD, &attr, sizeof(attr))) <= 0)
			break;
		buf_add(out, chunk, (size_t)n);
	}
	free(chunk);
	return n < 0 ? -1 : 0;
}

/* `printk <blob>` (trace_pipe lines written during the run; `printk_lost N`
 * if over 1 MiB) and, on kernels with BPF streams, `stream_stdout <blob>`,
 * `stream_stderr <blob>`. */
static void reply_run_output(struct reply *r, int prog_fd)
{
	struct buf out = {0};
	size_t lost = read_trace_pipe(&out);

	if (trace_pipe_fd() >= 0)
		reply_blob(r, "printk", out.p, out.len);
	if (lost)
		reply_int(r, "printk_lost", (long long)lost);
	for (__u32 id = 1; id <= 2; id++) {
		out.len = 0;
		if (read_stream(prog_fd, id, &out) == 0)
			reply_blob(r, id == 1 ? "stream_stdout" : "stream_stderr", out.p, out.len);
	}
	buf_free(&out);
}

/* The test run of `run` and `run_id`: a[1..4] = repeat, data_in, ctx_in, data_out_size. */
static int test_run(struct reply *r, int prog_fd, struct arg *a)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	void *data_out, *ctx_out;
	int err;

	if (a[1].i < 0 || a[1].i > UINT32_MAX || a[4].i < 0 || a[4].i > RUN_MAX_OUT)
		return reply_err(r, "bad request: repeat or data_out_size out of range");
	data_out = calloc(1, (size_t)a[4].i + 1);
	ctx_out = calloc(1, a[3].n + 1);
	opts.repeat = (int)a[1].i;
	if (a[2].n) {   /* no packet (raw_tp, syscall programs): no data_in, no ctx_out */
		opts.data_in = a[2].b;
		opts.data_size_in = (__u32)a[2].n;
	}
	if (a[4].i && a[2].n) {
		opts.data_out = data_out;
		opts.data_size_out = (__u32)a[4].i;
	}
	if (a[3].n) {   /* an empty ctx_in is omitted, and so is ctx_out */
		opts.ctx_in = a[3].b;
		opts.ctx_size_in = (__u32)a[3].n;
		if (a[2].n) {
			opts.ctx_size_out = (__u32)a[3].n;
			opts.ctx_out = ctx_out;
		}
	}
	read_trace_pipe(NULL);   /* older lines are not this run's */
	err = bpf_prog_test_run_opts(prog_fd, &opts);
	if (!err) {
		reply_int(r, "retval", opts.retval);
		reply_int(r, "duration", opts.duration);
		reply_blob(r, "data_out", data_out, opts.data_out ? MIN(opts.data_size_out, a[4].i) : 0);
		if (opts.ctx_out)
			reply_blob(r, "ctx_out", ctx_out, MIN(opts.ctx_size_out, a[3].n));
		else   /* a context-only run: syscall programs' context is copied back */
			reply_blob(r, "ctx_out", a[3].n ? a[3].b : ctx_out, a[3].n);
		reply_run_output(r, prog_fd);
	}
	free(data_out), free(ctx_out);
	return err ? reply_err(r, "test_run: %s", strerror(-err)) : 0;
}

static int do_run(struct agent *ag, struct reply *r, struct arg *a)
{
	struct handle *h = get_handle(ag, r, a[0].i);

	return h ? test_run(r, bpf_program__fd(h->prog), a) : -1;
}

static int do_unload(struct agent *ag, struct reply *r, struct arg *a)
{
	struct handle *h = get_handle(ag, r, a[0].i);

	if (!h)
		return -1;
	handle_free(h);
	ag->h[a[0].i - 1] = NULL;
	return 0;
}

static int do_kallsyms(struct agent *ag, struct reply *r, struct arg *a)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	char *line = NULL, name[512], type;
	unsigned long long addr = 0;
	size_t cap = 0;
	int found = 0;

	(void)ag;
	if (!f)
		return reply_err(r, "/proc/kallsyms: %s", strerror(errno));
	while (!found && getline(&line, &cap, f) > 0)
		found = sscanf(line, "%llx %c %511s", &addr, &type, name) == 3 && !strcmp(name, a[0].s);
	free(line);
	fclose(f);
	if (!found)
		return reply_err(r, "symbol '%s' not found in /proc/kallsyms", a[0].s);
	if (!addr)
		return reply_err(r, "address of '%s' is hidden (kptr_restrict; run as root)", a[0].s);
	reply_line(r, "addr", "%016llx", addr);
	return 0;
}

/* ------------------------------------------------------------ guest files and commands */

#define EXEC_OUTPUT_CAP (1u << 20)
#define GET_MAX (256u << 20)
#define EXEC_TIMEOUT_MS 60000

/* put <path> <data>: create or truncate a file, mode 0755. */
static int do_put(struct agent *ag, struct reply *r, struct arg *a)
{
	const unsigned char *p = a[1].b;
	size_t n = a[1].n;
	int fd, err = 0;

	(void)ag;
	if (a[0].s[0] != '/')
		return reply_err(r, "path must be absolute, got '%s'", a[0].s);
	if ((fd = open(a[0].s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755)) < 0)
		return reply_err(r, "%s: %s", a[0].s, strerror(errno));
	while (!err && n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			err = errno;
		else
			p += w, n -= (size_t)w;
	}
	if (!err && fchmod(fd, 0755))   /* the umask may have cut the mode */
		err = errno;
	if (close(fd) && !err)
		err = errno;
	return err ? reply_err(r, "%s: %s", a[0].s, strerror(err)) : 0;
}

/* get <path>: a file's contents (at most GET_MAX bytes). */
static int do_get(struct agent *ag, struct reply *r, struct arg *a)
{
	struct buf data = {0};
	char chunk[65536];
	ssize_t got;
	int fd, err = 0;

	(void)ag;
	if (a[0].s[0] != '/')
		return reply_err(r, "path must be absolute, got '%s'", a[0].s);
	if ((fd = open(a[0].s, O_RDONLY | O_CLOEXEC)) < 0)
		return reply_err(r, "%s: %s", a[0].s, strerror(errno));
	while (!err && (got = read(fd, chunk, sizeof(chunk))) != 0) {
		if (got < 0 && errno != EINTR)
			err = errno;
		else if (got > 0 && data.len + (size_t)got > GET_MAX)
			err = EFBIG;
		else if (got > 0)
			buf_add(&data, chunk, (size_t)got);
	}
	close(fd);
	if (!err)
		reply_blob(r, "data", data.p, data.len);
	buf_free(&data);
	return err ? reply_err(r, "%s: %s", a[0].s, strerror(err)) : 0;
}

/* The child of `exec`: /bin/sh -c cmd in its own process group, stdin
 * /dev/null, stdout and stderr into the pipe. */
static void exec_child(const char *cmd, int out_fd)
{
	int null_fd = open("/dev/null", O_RDONLY);

	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);   /* the agent ignores it; exec keeps SIG_IGN */
	if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
	    dup2(out_fd, STDERR_FILENO) < 0)
		_exit(127);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	_exit(127);
}

/* Reads what is in the pipe (non-blocking) into out, up to the cap; returns
 * 1 at end of file. */
static int drain_pipe(int fd, struct buf *out)
{
	char chunk[65536];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n == 0)
			return 1;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : 1;
		if (out->len < EXEC_OUTPUT_CAP)
			buf_add(out, chunk, MIN((size_t)n, EXEC_OUTPUT_CAP - out->len));
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Collects the output until the child exits (the pipe may stay open in its
 * background children: they are not waited for) or the time is up; returns
 * the wait status, *killed set if the child was killed for the time. */
static int wait_child(pid_t pid, int fd, struct buf *out, int *killed)
{
	long long deadline = now_ms() + EXEC_TIMEOUT_MS;
	int status = 0, eof = 0;

	*killed = 0;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid || (w < 0 && errno != EINTR)) {
			if (!eof)
				drain_pipe(fd, out);   /* all it wrote is in the pipe now */
			return status;
		}
		if (now_ms() >= deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			*killed = 1;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			if (!eof)
				drain_pipe(fd, out);
			return status;
		}
		if (eof || poll(&pfd, 1, 20) <= 0)
			usleep(eof ? 20000 : 0);
		else
			eof = drain_pipe(fd, out);
	}
}

/* exec <cmd>: /bin/sh -c cmd, at most EXEC_TIMEOUT_MS. */
static int do_exec(struct agent *ag, struct reply *r, struct arg *a)
{
	char *cmd = strndup((const char *)a[0].b, a[0].n);
	struct buf out = {0};
	int fds[2], status, killed;
	pid_t pid;

	(void)ag;
	if (!cmd)
		return reply_err(r, "out of memory");
	if (pipe2(fds, O_CLOEXEC)) {
		free(cmd);
		return reply_err(r, "pipe: %s", strerror(errno));
	}
	if ((pid = fork()) == 0)
		exec_child(cmd, fds[1]);
	close(fds[1]);
	free(cmd);
	if (pid < 0) {
		close(fds[0]);
		return reply_err(r, "fork: %s", strerror(errno));
	}
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	status = wait_child(pid, fds[0], &out, &killed);
	close(fds[0]);
	if (killed)
		reply_int(r, "timed_out", EXEC_TIMEOUT_MS / 1000);
	reply_int(r, "status", WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
	reply_blob(r, "output", out.p, out.len);
	buf_free(&out);
	return 0;
}

/* ------------------------------------------------------------ kernel modules */

/* The last kernel log lines that mention name (at most 3), for an error. */
static void kernel_log_about(const char *name, struct buf *out)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0), n;
	char *log = size > 0 ? malloc((size_t)size + 1) : NULL;
	const char *hits[3] = {0};
	size_t nhits = 0;

	if (!log || (n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, log, size)) <= 0) {
		free(log);
		return;
	}
	log[n] = '\0';
	for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
		if (strstr(line, name))
			hits[nhits++ % 3] = line;
	for (size_t i = nhits > 3 ? nhits - 3 : 0; i < nhits; i++)
		buf_printf(out, "%s%s", out->len ? " | " : "", hits[i % 3]);
	free(log);
}

/* module_load <name> <image>: init_module() of a module's (uncompressed)
 * image; `already 1` if it was loaded. Dependencies are the host's job. */
static int do_module_load(struct agent *ag, struct reply *r, struct arg *a)
{
	struct buf why = {0};
	int err;

	(void)ag;
	if (!syscall(__NR_init_module, a[1].b, (unsigned long)a[1].n, ""))
		return 0;
	if ((err = errno) == EEXIST) {
		reply_int(r, "already", 1);
		return 0;
	}
	kernel_log_about(a[0].s, &why);
	err = reply_err(r, "loading module %s failed: %s%s%s", a[0].s, strerror(err),
			why.len ? "; kernel log: " : "", why.len ? why.p : "");
	buf_free(&why);
	return err;
}

/* ------------------------------------------------------------ programs by id ("foreign") */

static int prog_fd_by_id(struct reply *r, long long id)
{
	int fd;

	if (id <= 0 || id > UINT32_MAX)
		return reply_err(r, "no program with id %lld", id);
	if ((fd = bpf_prog_get_fd_by_id((__u32)id)) < 0)
		return reply_err(r, "no program with id %lld: %s", id, strerror(errno));
	return fd;
}

/* What find_prog compares: the kernel's short description of a program. */
struct prog_brief {
	__u32 id, type;
	char name[BPF_OBJ_NAME_LEN];
	__u8 tag[BPF_TAG_SIZE];
};

static int prog_brief_of_fd(int fd, struct prog_brief *b)
{
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -1;
	b->id = info.id;
	b->type = info.type;
	memcpy(b->name, info.name, sizeof(b->name));
	b->name[sizeof(b->name) - 1] = '\0';
	memcpy(b->tag, info.tag, sizeof(b->tag));
	return 0;
}

/* Every loaded program (those that vanish meanwhile are skipped). */
static struct prog_brief *list_progs(size_t *n)
{
	struct prog_brief *all = NULL, *more;
	__u32 id = 0;

	*n = 0;
	while (bpf_prog_get_next_id(id, &id) == 0) {
		int fd = bpf_prog_get_fd_by_id(id);

		if (fd < 0)
			continue;
		if (!(more = realloc(all, (*n + 1) * sizeof(*all)))) {
			close(fd);
			break;
		}
		all = more;
		if (prog_brief_of_fd(fd, &all[*n]) == 0)
			(*n)++;
		close(fd);
	}
	return all;
}

static void tag_hex(const __u8 *tag, char *hex)
{
	for (int i = 0; i < BPF_TAG_SIZE; i++)
		sprintf(hex + 2 * i, "%02x", tag[i]);
}

/* The id of the program pinned at path, or 0 after an err reply. */
static __u32 pinned_prog_id(struct reply *r, const char *path)
{
	struct prog_brief b;
	char fdpath[64], link[64] = "";
	int fd = bpf_obj_get(path);

	if (fd < 0) {
		reply_err(r, "no program pinned at %s: %s", path, strerror(errno));
		return 0;
	}
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	if (readlink(fdpath, link, sizeof(link) - 1) > 0 && !strstr(link, "bpf-prog")) {
		close(fd);
		reply_err(r, "%s is not a program (%s)", path, link);
		return 0;
	}
	if (prog_brief_of_fd(fd, &b)) {
		reply_err(r, "%s: bpf_obj_get_info_by_fd: %s", path, strerror(errno));
		b.id = 0;
	}
	close(fd);
	return b.id;
}

static int prog_matches(const struct prog_brief *b, const char *kind, const char *value,
			__u32 id)
{
	char hex[2 * BPF_TAG_SIZE + 1];

	if (!strcmp(kind, "name"))
		return !strcmp(b->name, value);
	if (!strcmp(kind, "tag")) {
		tag_hex(b->tag, hex);
		return !strcasecmp(hex, value);
	}
	return b->id == id;   /* id, pinned */
}

/* find_prog <kind> <value>: kind id, name, tag or pinned. */
static int do_find_prog(struct agent *ag, struct reply *r, struct arg *a)
{
	const char *kind = a[0].s, *value = a[1].s;
	struct prog_brief *all, *found = NULL;
	struct buf list = {0};
	size_t n, matches = 0;
	long long id = 0;
	int err = 0;

	(void)ag;
	if (strcmp(kind, "id") && strcmp(kind, "name") && strcmp(kind, "tag") && strcmp(kind, "pinned"))
		return reply_err(r, "kind must be id, name, tag or pinned, got '%s'", kind);
	if (!strcmp(kind, "id") && (parse_int(value, &id) || id <= 0 || id > UINT32_MAX))
		return reply_err(r, "bad request: program id must be a positive integer, got '%s'", value);
	if (!strcmp(kind, "pinned") && !(id = pinned_prog_id(r, value)))
		return -1;
	all = list_progs(&n);
	for (size_t i = 0; i < n; i++) {
		if (!prog_matches(&all[i], kind, value, (__u32)id))
			continue;
		found = &all[i];
		buf_printf(&list, "%s%u", matches++ ? ", " : "", all[i].id);
	}
	if (matches == 1) {
		reply_int(r, "prog_id", found->id);
		reply_word(r, "name", found->name[0] ? found->name : "-");
		reply_int(r, "type", found->type);
		reply_blob(r, "tag", found->tag, sizeof(found->tag));
	} else if (matches > 1) {
		err = reply_err(r, "several programs with %s %s: ids %s", kind, value, list.p);
	} else {
		for (size_t i = 0; i < n; i++)
			buf_printf(&list, "%s%u:%s", i ? ", " : "", all[i].id, all[i].name);
		err = reply_err(r, "no program with %s %s; loaded: %s", kind, value,
				n ? list.p : "(none)");
	}
	free(all);
	buf_free(&list);
	return err;
}

/* The raw BTF of a program (`btf` line); nothing for btf_id 0. */
static int reply_btf(struct reply *r, __u32 btf_id)
{
	struct bpf_btf_info info = {0};
	__u32 len = sizeof(info);
	void *data = NULL;
	int fd, err = 0;

	if (!btf_id)
		return 0;
	if ((fd = bpf_btf_get_fd_by_id(btf_id)) < 0)
		return reply_err(r, "btf id %u: %s", btf_id, strerror(errno));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {   /* pass 1: the size */
		__u32 size = info.btf_size;

		data = calloc(1, size + 1);
		memset(&info, 0, sizeof(info));
		info.btf = (uintptr_t)data;
		info.btf_size = size;
		len = sizeof(info);
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			reply_blob(r, "btf", data, MIN(size, info.btf_size));
		else
			err = errno;
	} else {
		err = errno;
	}
	free(data);
	close(fd);
	return err ? reply_err(r, "btf id %u: bpf_obj_get_info_by_fd: %s", btf_id, strerror(err)) : 0;
}

/* One `map` line per map id (maps that vanished meanwhile are skipped). */
static void reply_maps_by_id(struct reply *r, const __u32 *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct bpf_map_info info = {0};
		__u32 len = sizeof(info);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			reply_map_line(r, info.name[0] ? info.name : "-", &info);
		close(fd);
	}
}

static size_t info_array_index(size_t nr_offset)
{
	size_t i = 0;

	while (info_arrays[i].nr != nr_offset)
		i++;
	return i;
}

/* info_id <prog_id>: `info`, plus func_info, btf and map lines, for any program. */
static int do_info_id(struct agent *ag, struct reply *r, struct arg *a)
{
	size_t maps = info_array_index(offsetof(struct bpf_prog_info, nr_map_ids));
	struct prog_info pi;
	int fd = prog_fd_by_id(r, a[0].i), err;

	(void)ag;
	if (fd < 0)
		return -1;
	if ((err = prog_info_get(fd, &pi))) {
		close(fd);
		return reply_err(r, "program id %lld: bpf_obj_get_info_by_fd: %s", a[0].i, strerror(err));
	}
	close(fd);
	reply_prog_info(r, &pi, "-", 1);
	err = reply_btf(r, pi.info.btf_id);
	if (!err)
		reply_maps_by_id(r, pi.bufs[maps], pi.n[maps]);
	prog_info_free(&pi);
	return err;
}

/* run_id <prog_id> <repeat> <data_in> <ctx_in> <data_out_size> */
static int do_run_id(struct agent *ag, struct reply *r, struct arg *a)
{
	int fd = prog_fd_by_id(r, a[0].i), err;

	(void)ag;
	if (fd < 0)
		return -1;
	err = test_run(r, fd, a);
	close(fd);
	return err;
}

/* ------------------------------------------------------------ --load-pin: an ordinary loader */

/* qstep-agent --load-pin OBJ PROG PIN: loads PROG alone with plain libbpf (its
 * own line_info: g_cap.target stays "", so __wrap_syscall passes everything
 * through), pins it at PIN and prints "prog_id N". */
static int load_pin(const char *path, const char *name, const char *pin)
{
	struct bpf_program *p, *prog = NULL;
	struct bpf_object *obj;
	struct prog_brief b;
	int err;

	g_cap.target[0] = '\0';   /* interception off */
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "qstep-agent: cannot open %s: %s\n", path, strerror(errno));
		return 1;
	}
	bpf_object__for_each_program(p, obj) {
		int match = strcmp(bpf_program__name(p), name) == 0;

		bpf_program__set_autoload(p, match);
		prog = match ? p : prog;
	}
	if (!prog) {
		fprintf(stderr, "qstep-agent: no program '%s' in %s\n", name, path);
		bpf_object__close(obj);
		return 1;
	}
	if ((err = bpf_object__load(obj)))
		fprintf(stderr, "qstep-agent: loading '%s' failed: %s\n", name, strerror(-err));
	else if ((err = bpf_program__pin(prog, pin)))
		fprintf(stderr, "qstep-agent: pinning at %s failed: %s\n", pin, strerror(-err));
	else if ((err = prog_brief_of_fd(bpf_program__fd(prog), &b)))
		fprintf(stderr, "qstep-agent: bpf_obj_get_info_by_fd: %s\n", strerror(errno));
	else
		printf("prog_id %u\n", b.id);
	bpf_object__close(obj);
	return err ? 1 : 0;
}

/* ------------------------------------------------------------ probe verbs */

static __u32 map_id_of(int fd)
{
	struct bpf_map_info info = {0};
	__u32 len = sizeof(info);

	return bpf_obj_get_info_by_fd(fd, &info, &len) ? 0 : info.id;
}

/* ring_buffer__consume() callback: keep the record for the reply. */
static int keep_record(void *ctx, void *data, size_t size)
{
	struct probes *p = ctx;

	records_keep(&p->pending, &p->lost, PENDING_MAX, data, size);
	return 0;
}

static int create_probe_maps(struct reply *r, struct probes *p, __u32 ringbuf_bytes)
{
	int err;

	p->events_fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "qstep_events", 0, 0, ringbuf_bytes, NULL);
	if (p->events_fd < 0)
		return reply_err(r, "creating the ring buffer qstep_events: %s", strerror(errno));
	p->counters_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "qstep_counters", sizeof(__u32),
					sizeof(__u64), COUNTERS_ENTRIES, NULL);
	if (p->counters_fd < 0) {
		err = errno;
		close(p->events_fd);
		return reply_err(r, "creating the array qstep_counters: %s", strerror(err));
	}
	if (!(p->rb = ring_buffer__new(p->events_fd, keep_record, p, NULL))) {
		err = errno;
		close(p->events_fd), close(p->counters_fd);
		return reply_err(r, "ring_buffer__new: %s", strerror(err));
	}
	p->ready = 1;
	return 0;
}

/* With no probe attached, the ring buffer and counters of earlier probes are dropped:
 * a new set of probes starts from empty maps, whatever an earlier one left behind
 * (a full ring, a record a run that never finished had reserved). */
static void reset_probe_maps(struct probes *p)
{
	for (size_t i = 0; i < MAX_PROBES; i++)
		if (p->slot[i].handle)
			return;
	if (!p->ready)
		return;
	ring_buffer__free(p->rb);
	close(p->events_fd), close(p->counters_fd);
	p->pending.len = 0;
	p->lost = 0;
	p->ready = 0;
}

static int do_probe_setup(struct agent *ag, struct reply *r, struct arg *a)
{
	struct probes *p = &ag->probes;
	long long size = a[0].i;

	if (size < 4096 || size > (1LL << 30) || (size & (size - 1)))
		return reply_err(r, "ring buffer size must be a power of two from 4096 to 2^30, got %lld", size);
	reset_probe_maps(p);
	if (!p->ready && create_probe_maps(r, p, (__u32)size))
		return -1;
	reply_int(r, "events_map_id", map_id_of(p->events_fd));
	reply_int(r, "counters_map_id", map_id_of(p->counters_fd));
	return 0;
}

/* The instructions of a probe with every map reference (ld_imm64 with src_reg
 * BPF_PSEUDO_MAP_FD or BPF_PSEUDO_MAP_VALUE, imm = index into map_refs) turned
 * into an fd. The fds opened are left in fds[] (one per map_refs entry, -1 if
 * unused) for the caller to close once the program is loaded. */
static struct bpf_insn *resolve_map_refs(struct reply *r, const struct arg *code,
					 const struct arg *refs, int *fds)
{
	size_t cnt = code->n / sizeof(struct bpf_insn), nrefs = refs->n / sizeof(__u32);
	struct bpf_insn *insns = malloc(code->n);

	if (!insns) {
		reply_err(r, "out of memory");
		return NULL;
	}
	memcpy(insns, code->b, code->n);   /* the blob is not aligned */
	for (size_t i = 0; i < cnt; i++) {
		struct bpf_insn *in = &insns[i];
		__u32 k = (__u32)in->imm, id;

		if (in->code != (BPF_LD | BPF_IMM | BPF_DW))
			continue;
		i++;   /* the second slot */
		if (in->src_reg != BPF_PSEUDO_MAP_FD && in->src_reg != BPF_PSEUDO_MAP_VALUE)
			continue;
		if (k >= nrefs) {
			reply_err(r, "instruction %zu refers to map_refs[%u], but map_refs has %zu entries",
				  (size_t)(in - insns), k, nrefs);
			free(insns);
			return NULL;
		}
		memcpy(&id, refs->b + k * sizeof(id), sizeof(id));
		if (fds[k] < 0 && (fds[k] = bpf_map_get_fd_by_id(id)) < 0) {
			reply_err(r, "map_refs[%u]: no map with id %u: %s", k, id, strerror(errno));
			free(insns);
			return NULL;
		}
		in->imm = fds[k];
	}
	return insns;
}

/* Loads without a log; on failure loads again at log level 1 to report why. */
static int load_probe_prog(struct reply *r, const struct bpf_insn *insns, size_t cnt)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	int fd = bpf_prog_load(BPF_PROG_TYPE_PERF_EVENT, "qstep_probe", "GPL", insns, cnt, &opts);
	int err = errno, sent_log = 0;
	char *log;

	if (fd >= 0)
		return fd;
	if ((log = calloc(1, PROBE_LOG_SIZE))) {
		opts.log_buf = log;
		opts.log_size = PROBE_LOG_SIZE;
		opts.log_level = 1;
		fd = bpf_prog_load(BPF_PROG_TYPE_PERF_EVENT, "qstep_probe", "GPL", insns, cnt, &opts);
		if (fd < 0 && (sent_log = log[0] != '\0'))
			reply_log(r, "log", log, strlen(log));
		free(log);
	}
	if (fd >= 0)   /* it passed this time: use it */
		return fd;
	reply_err(r, "loading the probe program failed: %s%s", strerror(err),
		  sent_log ? " (see verifier log)" : "");
	return -1;
}

static int perf_event_open(struct perf_event_attr *attr)
{
	return (int)syscall(__NR_perf_event_open, attr, -1 /* pid */, 0 /* cpu */,
			    -1 /* group */, PERF_FLAG_FD_CLOEXEC);
}

static int kprobe_pmu_type(void)
{
	FILE *f = fopen("/sys/bus/event_source/devices/kprobe/type", "r");
	int type = -1;

	if (f) {
		if (fscanf(f, "%d", &type) != 1)
			type = -1;
		fclose(f);
	}
	return type;
}

/* Hands prog_fd to the perf event and starts it; returns 0 or errno. */
static int enable_probe(int perf_fd, int prog_fd)
{
	if (ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd) ||
	    ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0))
		return errno;
	return 0;
}

/* A kprobe at a raw address. A kprobe event takes only BPF_PROG_TYPE_KPROBE
 * programs, whose context is the pt_regs that begins bpf_perf_event_data: the
 * probe is loaded again with that type (a probe that reads sample_period or
 * addr, or calls perf-only helpers, is refused). Returns 0 or errno; *why
 * names the step that failed. */
static int attach_kprobe(struct probe *pr, unsigned long long addr, const struct bpf_insn *insns,
			 size_t cnt, const char **why)
{
	struct perf_event_attr attr = {.size = sizeof(attr), .sample_period = 1, .disabled = 1};
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	int type = kprobe_pmu_type(), perf_fd, prog_fd, err;

	*why = "this kernel has no kprobe PMU";
	if (type < 0)
		return ENOENT;
	attr.type = (__u32)type;
	attr.kprobe_func = 0;   /* none: kprobe_addr is the address */
	attr.kprobe_addr = addr;
	*why = "perf_event_open";
	if ((perf_fd = perf_event_open(&attr)) < 0)
		return errno;
	*why = "loading the probe as a kprobe program";
	prog_fd = bpf_prog_load(BPF_PROG_TYPE_KPROBE, "qstep_probe", "GPL", insns, cnt, &opts);
	err = prog_fd < 0 ? errno : 0;
	if (!err && (err = enable_probe(perf_fd, prog_fd)))
		*why = "PERF_EVENT_IOC_SET_BPF/ENABLE";
	if (err) {
		close(perf_fd);
		if (prog_fd >= 0)
			close(prog_fd);
		return err;
	}
	pr->perf_fd = perf_fd;
	pr->prog_fd = prog_fd;
	return 0;
}

/* A hardware breakpoint running prog_fd; returns 0 or errno (*why as above). */
static int attach_breakpoint(struct probe *pr, unsigned long long addr, __u32 bp_type,
			     __u64 bp_len, int prog_fd, const char **why)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_BREAKPOINT, .size = sizeof(attr), .bp_type = bp_type,
		.bp_addr = addr, .bp_len = bp_len, .sample_period = 1, .disabled = 1,
	};
	int perf_fd, err;

	*why = "perf_event_open";
	if ((perf_fd = perf_event_open(&attr)) < 0)
		return errno;
	*why = "PERF_EVENT_IOC_SET_BPF/ENABLE";
	if ((err = enable_probe(perf_fd, prog_fd))) {
		close(perf_fd);
		return err;
	}
	pr->perf_fd = perf_fd;
	pr->prog_fd = prog_fd;
	return 0;
}

static int valid_breakpoint(long long type, long long len)
{
	if (type == HW_BREAKPOINT_X)
		return len == sizeof(long);
	return (type == HW_BREAKPOINT_R || type == HW_BREAKPOINT_W || type == HW_BREAKPOINT_RW) &&
	       (len == 1 || len == 2 || len == 4 || len == 8);
}

/* Probes are perf events of CPU 0: the programs the agent runs must run there. */
static void run_on_cpu0(void)
{
	cpu_set_t cpus;

	CPU_ZERO(&cpus);
	CPU_SET(0, &cpus);
	sched_setaffinity(0, sizeof(cpus), &cpus);   /* best effort */
}

static struct probe *free_probe_slot(struct probes *p)
{
	for (size_t i = 0; i < MAX_PROBES; i++)
		if (!p->slot[i].handle)
			return &p->slot[i];
	return NULL;
}

/* Opens the perf event of the probe (kprobe or hardware breakpoint, by mode)
 * with prog_fd (a perf_event program) or a kprobe twin of it; replies err. */
static int attach_probe(struct reply *r, struct probe *pr, const struct arg *a,
			const struct bpf_insn *insns, size_t cnt, int prog_fd, const char **kind)
{
	unsigned long long addr = (unsigned long long)a[1].i;
	const char *mode = a[6].s, *why;
	int err;

	if (strcmp(mode, "hw") != 0 && a[2].i == HW_BREAKPOINT_X) {
		err = attach_kprobe(pr, addr, insns, cnt, &why);
		if (!err) {
			close(prog_fd);   /* the kprobe runs its own copy */
			*kind = "kprobe";
			return 0;
		}
		if (strcmp(mode, "kprobe") == 0)
			return reply_err(r, "kprobe at 0x%llx: %s: %s%s", addr, why, strerror(err),
					 err == EINVAL ? " (the kernel refuses kprobes in BPF JIT code; "
					 "use mode hw)" : "");
	}
	err = attach_breakpoint(pr, addr, (__u32)a[2].i, (__u64)a[3].i, prog_fd, &why);
	if (err == ENOSPC || err == EBUSY)
		return reply_err(r, NO_SLOT_MSG);
	if (err)
		return reply_err(r, "hardware breakpoint at 0x%llx: %s: %s", addr, why, strerror(err));
	*kind = "hw_breakpoint";
	return 0;
}

/* probe_attach <probe_id> <addr> <bp_type> <bp_len> <insns> <map_refs> <mode> */
static int do_probe_attach(struct agent *ag, struct reply *r, struct arg *a)
{
	struct probe *pr = free_probe_slot(&ag->probes);
	size_t cnt = a[4].n / sizeof(struct bpf_insn), nrefs = a[5].n / sizeof(__u32);
	const char *mode = a[6].s, *kind = NULL;
	struct bpf_insn *insns;
	int *fds, prog_fd = -1;

	if (a[0].i < 0 || a[0].i >= MAX_PROBES)
		return reply_err(r, "probe id must be 0..%d, got %lld", MAX_PROBES - 1, a[0].i);
	if (!valid_breakpoint(a[2].i, a[3].i))
		return reply_err(r, "bad breakpoint: bp_type %lld with bp_len %lld (execute 4: len 8; "
				 "read 1, write 2, read/write 3: len 1, 2, 4 or 8)", a[2].i, a[3].i);
	if (strcmp(mode, "auto") && strcmp(mode, "hw") && strcmp(mode, "kprobe"))
		return reply_err(r, "mode must be auto, hw or kprobe, got '%s'", mode);
	if (!strcmp(mode, "kprobe") && a[2].i != HW_BREAKPOINT_X)
		return reply_err(r, "a kprobe probes execution: bp_type must be 4");
	if (!cnt || a[4].n % sizeof(struct bpf_insn) || a[5].n % sizeof(__u32))
		return reply_err(r, "bad request: insns must be 8-byte instructions and map_refs u32 map ids");
	if (!pr)
		return reply_err(r, "too many probes (at most %d)", MAX_PROBES);
	if (!(fds = malloc((nrefs + 1) * sizeof(*fds))))
		return reply_err(r, "out of memory");
	run_on_cpu0();
	for (size_t i = 0; i < nrefs; i++)
		fds[i] = -1;
	if ((insns = resolve_map_refs(r, &a[4], &a[5], fds)))
		prog_fd = load_probe_prog(r, insns, cnt);
	if (prog_fd >= 0 && attach_probe(r, pr, a, insns, cnt, prog_fd, &kind))
		close(prog_fd);
	for (size_t i = 0; i < nrefs; i++)
		if (fds[i] >= 0)
			close(fds[i]);   /* a loaded program holds its own references */
	free(fds), free(insns);
	if (!kind)
		return -1;
	pr->handle = ++ag->probes.last_handle;
	reply_int(r, "probe_handle", pr->handle);
	reply_word(r, "attached", kind);
	return 0;
}

static void probe_free(struct probe *pr)
{
	ioctl(pr->perf_fd, PERF_EVENT_IOC_DISABLE, 0);
	close(pr->perf_fd);
	close(pr->prog_fd);
	memset(pr, 0, sizeof(*pr));
}

static int do_probe_detach(struct agent *ag, struct reply *r, struct arg *a)
{
	for (size_t i = 0; i < MAX_PROBES; i++) {
		struct probe *pr = &ag->probes.slot[i];

		if (pr->handle && pr->handle == a[0].i) {
			probe_free(pr);
			return 0;
		}
	}
	return reply_err(r, "unknown probe handle %lld", a[0].i);
}

static int do_probe_drain(struct agent *ag, struct reply *r, struct arg *a)
{
	struct probes *p = &ag->probes;
	int n;

	(void)a;
	if (!p->ready)
		return reply_err(r, "no probe ring buffer: send probe_setup first");
	if ((n = ring_buffer__consume(p->rb)) < 0)
		return reply_err(r, "ring_buffer__consume: %s", strerror(-n));
	/* One blob (through the shared window when there is one) instead of a line per
	 * record: 100 000 small records as lines took ~50 s over the serial channel. */
	reply_blob(r, "records", p->pending.p, p->pending.len);
	reply_int(r, "lost", p->lost);
	p->pending.len = 0;
	p->lost = 0;
	return 0;
}

static void probes_free(struct probes *p)
{
	for (size_t i = 0; i < MAX_PROBES; i++)
		if (p->slot[i].handle)
			probe_free(&p->slot[i]);
	if (p->ready) {
		ring_buffer__free(p->rb);
		close(p->events_fd), close(p->counters_fd);
	}
	buf_free(&p->pending);
	memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------ main loop */

static const struct verb {
	const char *name, *spec;   /* spec: see parse_args() */
	int (*fn)(struct agent *, struct reply *, struct arg *);
} verbs[] = {
	{"hello", "", do_hello},
	{"load", "bw*", do_load},
	{"info", "i", do_info},
	{"update", "iwbb", do_update},
	{"dump", "iw", do_dump},
	{"run", "iibbi", do_run},
	{"unload", "i", do_unload},
	{"kallsyms", "w", do_kallsyms},
	{"dump_id", "i", do_dump_id},
	{"update_id", "ibb", do_update_id},
	{"probe_setup", "i", do_probe_setup},
	{"probe_attach", "iiiibbw", do_probe_attach},
	{"probe_detach", "i", do_probe_detach},
	{"probe_drain", "", do_probe_drain},
	{"put", "wb", do_put},
	{"get", "w", do_get},
	{"exec", "b", do_exec},
	{"find_prog", "ww", do_find_prog},
	{"info_id", "i", do_info_id},
	{"run_id", "iibbi", do_run_id},
	{"module_load", "wb", do_module_load},
};

static const struct verb *find_verb(const char *name)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(name, verbs[i].name) == 0)
			return &verbs[i];
	return NULL;
}

static void serve_tokens(struct agent *ag, struct reply *r, char **tok, int ntok, int too_many,
			 __u64 shared_end)
{
	struct arg args[MAX_ARGS + 1] = {{0}};   /* args[ntok].s == NULL */
	const struct verb *v;
	long long seq;
	int parsed;

	/* a request without a valid seq is answered as request 0 */
	r->seq = parse_int(tok[0], &seq) == 0 && seq >= 0 ? tok[0] : "0";
	v = ntok >= 2 ? find_verb(tok[1]) : NULL;
	parsed = v && !too_many && r->seq == tok[0] &&
		 parse_args(r, v->name, v->spec, tok + 2, ntok - 2, args) == 0;
	window_release(shared_end);   /* its blobs are copied (or refused) by now */
	g_win.waited = 0;
	if (r->seq != tok[0] || ntok < 2)
		reply_err(r, "bad request: expected '<seq> <verb> [args]'");
	else if (too_many)
		reply_err(r, "bad request: too many arguments");
	else if (!v)
		reply_err(r, "unknown verb '%.64s'", tok[1]);
	else if (parsed && v->fn(ag, r, args) == 0)
		reply_ok(r);
	for (int i = 0; i < MAX_ARGS; i++)
		free(args[i].owned);
}

static void serve_line(struct agent *ag, struct reply *r, char *line)
{
	char *tok[MAX_ARGS + 2], *save = NULL;
	int ntok = 0, too_many = 0;
	__u64 shared_end = 0, pos, len;

	line[strcspn(line, "\r\n")] = '\0';
	for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (window_blob(t, &pos, &len))
			shared_end = pos + len > shared_end ? pos + len : shared_end;
		if (ntok < MAX_ARGS + 2)
			tok[ntok++] = t;
		else
			too_many = 1;
	}
	if (ntok)   /* else a blank line */
		serve_tokens(ag, r, tok, ntok, too_many, shared_end);
}

/* Raw mode: no echo, no CR/LF translation, 8 bits, blocking reads. */
static int open_device(const char *path)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios tio;

	if (fd < 0 || tcgetattr(fd, &tio) != 0)
		return fd;   /* not a tty (e.g. a fifo): use it as it is */
	cfmakeraw(&tio);
	tio.c_cflag |= CLOCAL | CREAD;
	tio.c_cc[VMIN] = 1;
	tio.c_cc[VTIME] = 0;
	cfsetispeed(&tio, B115200);
	cfsetospeed(&tio, B115200);
	return tcsetattr(fd, TCSANOW, &tio) == 0 ? fd : -1;
}

int main(int argc, char **argv)
{
	struct reply r = {.fd = STDOUT_FILENO};
	struct agent ag = {0};
	struct utsname u;
	char *line = NULL;
	size_t cap = 0;
	FILE *in = stdin;
	const char *window = NULL;

	if (argc == 5 && strcmp(argv[1], "--load-pin") == 0)
		return load_pin(argv[2], argv[3], argv[4]);
	if (argc >= 3 && strcmp(argv[1], "--window") == 0) {
		window = argv[2];
		argv += 2, argc -= 2;
	}
	if (argc > 2) {
		fprintf(stderr, "usage: %s [--window FILE] [DEVICE]\n"
			"       %s --load-pin OBJ.o PROG_NAME PIN_PATH\n", argv[0], argv[0]);
		return 2;
	}
	if (argc == 2 && ((r.fd = open_device(argv[1])) < 0 || !(in = fdopen(r.fd, "r")))) {
		fprintf(stderr, "qstep-agent: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (window ? window_map(window) : argc == 2 ? window_find_pci() : 0)
		fprintf(stderr, "qstep-agent: no shared window%s%s: blobs go as hex\n",
			window ? " at " : "", window ? window : "");
	signal(SIGPIPE, SIG_IGN);
	libbpf_set_print(libbpf_print);
	uname(&u);
	buf_printf(&r.out, "QSTEP-AGENT %d READY %s\n", PROTOCOL_VERSION, u.release);
	reply_flush(&r);
	while (getline(&line, &cap, in) >= 0)
		serve_line(&ag, &r, line);
	for (size_t i = 0; i < ag.n; i++)   /* EOF: the host hung up */
		handle_free(ag.h[i]);
	probes_free(&ag.probes);
	free(ag.h), free(line), buf_free(&r.out), buf_free(&g_libbpf_log);
	return 0;
}

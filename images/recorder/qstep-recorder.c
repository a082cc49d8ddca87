/*
 * qstep-recorder: a QEMU TCG plugin that records a BPF program's execution.
 *
 * Loaded with  -plugin qstep-recorder.so,ctl=SOCKET,log=FILE
 * The host connects to the unix socket SOCKET and sends one line per command:
 *
 *   arm LIMIT START-END[,START-END...] BOUNDARY[,BOUNDARY...] [idt=ADDR]   (hex)
 *       -> "armed"       translations are flushed; from now on every x86
 *                        instruction in a range is instrumented (idt=: and
 *                        the IDT's handlers, for 'V' records: vectors.h)
 *   disarm
 *       -> "disarmed BYTES OVERFLOW"   the log is complete (BYTES long);
 *                        OVERFLOW 1: the limit was reached and recording stopped
 *   pause | resume
 *       -> "paused" | "resumed"   stop or restart logging while staying armed (the
 *                        ranges stay instrumented: no flush, so it works while the VM
 *                        is stopped; a debugger's 'record stop' and 'record')
 *   sync
 *       -> "synced BYTES OVERFLOW"   what was recorded so far is in FILE (BYTES
 *                        long); recording goes on (a debugger reads it at a stop)
 *   clear
 *       -> "cleared"     the log starts again, empty (armed or not, with the same
 *                        ranges and translations: a debugger's next run)
 *
 * While armed the plugin appends records to FILE (truncated at each arm),
 * little-endian, each starting with a u64 header whose low byte is the kind:
 *   'B' boundary: header, pc, then NREGS registers (REG_NAMES order), read
 *       before the instruction at a BPF instruction's first JIT byte
 *   'M' memory access by an in-range instruction: header (byte 1: log2 size,
 *       byte 2: 1 = store), pc, address, value (low 64 bits)
 *   'W' the same for a 16-byte access, followed by the high 64 bits
 *   'O' the bytes a store is about to replace: header (byte 1: log2 size), pc,
 *       address, old value; written just before that store's 'M' record (for the
 *       store forms x86-store.h decodes; other stores have no 'O' record)
 *   'V' an interrupt or exception delivered at an in-range instruction: header
 *       (byte 1: vector), the interrupted pc, the RFLAGS the CPU pushed
 * Outside the ranges nothing is instrumented; disarmed, nothing is.
 * Arming and disarming flush QEMU's translations (qemu_plugin_reset), which can
 * only happen on the vCPU thread: the host wakes it (QMP stop/cont) after sending.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <qemu-plugin.h>

#include "x86-store.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static const char *const REG_NAMES[] = {
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r13", "r14", "r15",
};
#define NREGS (sizeof(REG_NAMES) / sizeof(REG_NAMES[0]))
#define MAX_RANGES 64
#define BUF_SIZE (1 << 20)

struct range { uint64_t start, end; };

/* All 16 GPRs in x86 encoding order, for store addresses. */
static const char *const GPR_NAMES[16] = {
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
};

struct store_site {
    uint64_t pc;
    struct x86_store st;
};

static qemu_plugin_id_t plugin_id;
static struct qemu_plugin_register *regs[NREGS];
static struct qemu_plugin_register *gprs[16];
static GByteArray *reg_buf;
static GByteArray *mem_buf;
static GHashTable *store_sites; /* pc -> struct store_site, kept across flushes */

/* Shared with the control thread under `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static enum { IDLE, WANT_ARM, WANT_DISARM } pending;
static int completed; /* set by the reset callback */

/* Read by callbacks on the vCPU thread; changed only inside a reset. */
static int armed;
static struct range ranges[MAX_RANGES];
static size_t nranges;
static uint64_t *bounds; /* sorted */
static size_t nbounds;
static uint64_t limit;

/* The log, written by the vCPU thread; `sync` flushes it from the control thread. */
static pthread_mutex_t buf_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int paused; /* armed, but logging nothing (set by `pause`/`resume`) */
static int log_fd = -1;
static unsigned char *buf;
static size_t buf_len;
static uint64_t log_bytes;
static int overflow;

static int flush_buf(void)
{
    size_t off = 0;
    while (off < buf_len) {
        ssize_t n = write(log_fd, buf + off, buf_len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)n;
    }
    buf_len = 0;
    return 0;
}

/* Append a record of `n` u64 words, or note the overflow and stop recording. */
static void emit(const uint64_t *words, size_t n)
{
    size_t len = n * sizeof(uint64_t);
    pthread_mutex_lock(&buf_lock);
    if (overflow || log_bytes + len > limit ||
        (buf_len + len > BUF_SIZE && flush_buf() < 0)) {
        overflow = 1;
    } else {
        memcpy(buf + buf_len, words, len);
        buf_len += len;
        log_bytes += len;
    }
    pthread_mutex_unlock(&buf_lock);
}

static uint64_t read_handle(struct qemu_plugin_register *handle)
{
    uint64_t v = 0;
    g_byte_array_set_size(reg_buf, 0);
    if (handle && qemu_plugin_read_register(handle, reg_buf) >= 8)
        memcpy(&v, reg_buf->data, 8);
    return v;
}

static uint64_t read_reg(size_t i)
{
    return read_handle(regs[i]);
}

/* Before a decoded store: log the bytes it is about to replace. */
static void on_store(unsigned int vcpu, void *udata)
{
    if (paused)
        return;
    struct store_site *site = udata;
    const struct x86_store *st = &site->st;
    uint64_t addr = (uint64_t)st->disp;
    if (st->base >= 0)
        addr += read_handle(gprs[st->base]);
    if (st->index >= 0)
        addr += read_handle(gprs[st->index]) * (uint64_t)st->scale;
    g_byte_array_set_size(mem_buf, 0);
    if (st->size > 8 || !qemu_plugin_read_memory_vaddr(addr, mem_buf, (size_t)st->size))
        return;
    uint64_t old = 0;
    memcpy(&old, mem_buf->data, (size_t)st->size);
    uint64_t shift = st->size == 1 ? 0 : st->size == 2 ? 1 : st->size == 4 ? 2 : 3;
    uint64_t rec[4] = { 'O' | shift << 8, site->pc, addr, old };
    emit(rec, 4);
}

/* The decoded store at pc (cached: JIT code does not change while armed), or NULL. */
static struct store_site *store_site_at(struct qemu_plugin_insn *insn, uint64_t pc)
{
    struct store_site *site = g_hash_table_lookup(store_sites, &pc);
    if (!site) {
        uint8_t bytes[16];
        size_t n = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));
        site = g_new0(struct store_site, 1);
        site->pc = pc;
        if (!x86_decode_store(bytes, n, pc, &site->st))
            site->st.size = 0;
        g_hash_table_insert(store_sites, &site->pc, site);
    }
    return site->st.size ? site : NULL;
}

static void on_boundary(unsigned int vcpu, void *pc)
{
    if (paused)
        return;
    uint64_t rec[2 + NREGS];
    rec[0] = 'B';
    rec[1] = (uint64_t)(uintptr_t)pc;
    for (size_t i = 0; i < NREGS; i++)
        rec[2 + i] = read_reg(i);
    emit(rec, 2 + NREGS);
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *pc)
{
    if (paused)
        return;
    qemu_plugin_mem_value v = qemu_plugin_mem_get_value(info);
    uint64_t shift = qemu_plugin_mem_size_shift(info);
    uint64_t store = qemu_plugin_mem_is_store(info) ? 1 : 0;
    uint64_t rec[5];
    rec[1] = (uint64_t)(uintptr_t)pc;
    rec[2] = vaddr;
    switch (v.type) {
    case QEMU_PLUGIN_MEM_VALUE_U8: rec[3] = v.data.u8; break;
    case QEMU_PLUGIN_MEM_VALUE_U16: rec[3] = v.data.u16; break;
    case QEMU_PLUGIN_MEM_VALUE_U32: rec[3] = v.data.u32; break;
    case QEMU_PLUGIN_MEM_VALUE_U64: rec[3] = v.data.u64; break;
    case QEMU_PLUGIN_MEM_VALUE_U128:
        rec[0] = 'W' | shift << 8 | store << 16;
        rec[3] = v.data.u128.low;
        rec[4] = v.data.u128.high;
        emit(rec, 5);
        return;
    }
    rec[0] = 'M' | shift << 8 | store << 16;
    emit(rec, 4);
}

static int in_ranges(uint64_t pc)
{
    for (size_t i = 0; i < nranges; i++)
        if (pc >= ranges[i].start && pc < ranges[i].end)
            return 1;
    return 0;
}

static int is_boundary(uint64_t pc)
{
    size_t lo = 0, hi = nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bounds[mid] == pc)
            return 1;
        if (bounds[mid] < pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

#include "vectors.h"

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    if (!armed)
        return;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        instrument_vector_entry(insn, pc);
        if (!in_ranges(pc))
            continue;
        void *udata = (void *)(uintptr_t)pc;
        if (is_boundary(pc))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_boundary, QEMU_PLUGIN_CB_R_REGS,
                                                   udata);
        struct store_site *site = store_site_at(insn, pc);
        if (site)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_store, QEMU_PLUGIN_CB_R_REGS, site);
        qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, udata);
    }
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    if (vcpu != 0)
        return;
    GArray *descs = qemu_plugin_get_registers();
    for (guint i = 0; i < descs->len; i++) {
        qemu_plugin_reg_descriptor *d = &g_array_index(descs, qemu_plugin_reg_descriptor, i);
        for (size_t r = 0; r < NREGS; r++)
            if (strcmp(d->name, REG_NAMES[r]) == 0)
                regs[r] = d->handle;
        for (size_t r = 0; r < 16; r++)
            if (strcmp(d->name, GPR_NAMES[r]) == 0)
                gprs[r] = d->handle;
    }
    g_array_free(descs, TRUE);
}

static void register_callbacks(qemu_plugin_id_t id);

/* Runs in QEMU's exclusive context after the translations were flushed. */
static void after_reset(qemu_plugin_id_t id)
{
    pthread_mutex_lock(&lock);
    if (pending == WANT_ARM) {
        g_hash_table_remove_all(store_sites); /* the code at these addresses may be new */
        armed = 1;
    } else if (pending == WANT_DISARM) {
        armed = 0;
        pthread_mutex_lock(&buf_lock);
        if (flush_buf() < 0)
            overflow = 1;
        pthread_mutex_unlock(&buf_lock);
    }
    pending = IDLE;
    completed = 1;
    pthread_cond_broadcast(&done);
    pthread_mutex_unlock(&lock);
    register_callbacks(id);
}

/* On the vCPU thread: start a pending arm/disarm (flush, then after_reset). */
static void maybe_reset(qemu_plugin_id_t id, unsigned int vcpu)
{
    int want;
    pthread_mutex_lock(&lock);
    want = pending != IDLE && !completed;
    pthread_mutex_unlock(&lock);
    if (want)
        qemu_plugin_reset(plugin_id, after_reset);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    maybe_reset(id, 0);
    on_translate(id, tb);
}

static void register_callbacks(qemu_plugin_id_t id)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_idle_cb(id, maybe_reset);
    qemu_plugin_register_vcpu_resume_cb(id, maybe_reset);
}

/* ---- control channel ---------------------------------------------------- */

static int parse_arm(char *args)
{
    char *save = NULL;
    char *lim = strtok_r(args, " ", &save);
    char *rs = strtok_r(NULL, " ", &save);
    char *bs = strtok_r(NULL, " \n", &save);
    char *opt = strtok_r(NULL, " \n", &save);
    if (!lim || !rs || !bs || (opt && strncmp(opt, "idt=", 4) != 0))
        return -1;
    limit = strtoull(lim, NULL, 10);
    idt_addr = opt ? strtoull(opt + 4, NULL, 16) : 0;
    idt_loaded = 0;
    nranges = 0;
    for (char *p = strtok_r(rs, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(p, '-');
        if (!dash || nranges == MAX_RANGES)
            return -1;
        ranges[nranges].start = strtoull(p, NULL, 16);
        ranges[nranges].end = strtoull(dash + 1, NULL, 16);
        nranges++;
    }
    size_t count = 1;
    for (char *p = bs; *p; p++)
        count += *p == ',';
    free(bounds);
    bounds = calloc(count, sizeof(*bounds));
    nbounds = 0;
    for (char *p = strtok_r(bs, ",", &save); p; p = strtok_r(NULL, ",", &save))
        bounds[nbounds++] = strtoull(p, NULL, 16);
    for (size_t i = 1; i < nbounds; i++) /* insertion sort: small, mostly sorted */
        for (size_t j = i; j > 0 && bounds[j - 1] > bounds[j]; j--) {
            uint64_t t = bounds[j];
            bounds[j] = bounds[j - 1];
            bounds[j - 1] = t;
        }
    return 0;
}

static void reply(int fd, const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n <= 0 && errno != EINTR)
            return;
        if (n > 0) {
            text += n;
            len -= (size_t)n;
        }
    }
}

/* Hand a command to the vCPU thread and wait until its reset has run. */
static void request(int want)
{
    pthread_mutex_lock(&lock);
    pending = want;
    completed = 0;
    while (!completed)
        pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
}

static void command(int fd, char *line)
{
    char out[128];
    if (strncmp(line, "arm ", 4) == 0) {
        if (armed) {
            reply(fd, "error already armed\n");
            return;
        }
        /* Not armed and nothing pending: the vCPU thread does not read these. */
        if (parse_arm(line + 4) < 0) {
            reply(fd, "error bad arm command\n");
            return;
        }
        if (ftruncate(log_fd, 0) < 0 || lseek(log_fd, 0, SEEK_SET) < 0) {
            reply(fd, "error cannot truncate the log\n");
            return;
        }
        buf_len = 0;
        log_bytes = 0;
        overflow = 0;
        paused = 0;
        request(WANT_ARM);
        reply(fd, "armed\n");
    } else if (strncmp(line, "disarm", 6) == 0) {
        if (armed)
            request(WANT_DISARM);
        snprintf(out, sizeof(out), "disarmed %" PRIu64 " %d\n", log_bytes, overflow);
        reply(fd, out);
    } else if (strncmp(line, "pause", 5) == 0 || strncmp(line, "resume", 6) == 0) {
        pthread_mutex_lock(&buf_lock);
        paused = line[0] == 'p';
        pthread_mutex_unlock(&buf_lock);
        reply(fd, paused ? "paused\n" : "resumed\n");
    } else if (strncmp(line, "clear", 5) == 0) {
        pthread_mutex_lock(&buf_lock);
        buf_len = 0;
        log_bytes = 0;
        overflow = 0;
        int bad = ftruncate(log_fd, 0) < 0 || lseek(log_fd, 0, SEEK_SET) < 0;
        pthread_mutex_unlock(&buf_lock);
        reply(fd, bad ? "error cannot truncate the log\n" : "cleared\n");
    } else if (strncmp(line, "sync", 4) == 0) {
        pthread_mutex_lock(&buf_lock);
        if (flush_buf() < 0)
            overflow = 1;
        snprintf(out, sizeof(out), "synced %" PRIu64 " %d\n", log_bytes, overflow);
        pthread_mutex_unlock(&buf_lock);
        reply(fd, out);
    } else {
        reply(fd, "error unknown command\n");
    }
}

static void serve(int fd)
{
    GString *line = g_string_new(NULL);
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] != '\n') {
                g_string_append_c(line, chunk[i]);
                continue;
            }
            command(fd, line->str);
            g_string_truncate(line, 0);
        }
    }
    g_string_free(line, TRUE);
}

static void *control_thread(void *arg)
{
    int server = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(server, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        serve(fd);
        close(fd);
        if (armed) /* the host went away while armed */
            request(WANT_DISARM);
    }
}

static int listen_on(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path))
        return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *ctl = NULL, *log = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "ctl=", 4) == 0)
            ctl = argv[i] + 4;
        else if (strncmp(argv[i], "log=", 4) == 0)
            log = argv[i] + 4;
    }
    if (!ctl || !log || !info->system_emulation) {
        fprintf(stderr, "qstep-recorder: needs ctl=SOCKET,log=FILE and system emulation\n");
        return 1;
    }
    log_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    buf = malloc(BUF_SIZE);
    reg_buf = g_byte_array_new();
    mem_buf = g_byte_array_new();
    store_sites = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
    int server = listen_on(ctl);
    pthread_t thread;
    if (log_fd < 0 || !buf || server < 0 ||
        pthread_create(&thread, NULL, control_thread, (void *)(intptr_t)server) != 0) {
        fprintf(stderr, "qstep-recorder: cannot open %s or listen on %s: %s\n", log, ctl,
                strerror(errno));
        return 1;
    }
    pthread_detach(thread);
    plugin_id = id;
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    register_callbacks(id);
    return 0;
}

/*
 * Interrupts and exceptions delivered at an in-range instruction ('V' records).
 *
 * Armed with idt=ADDR (the guest's IDT, e.g. idt_table from kallsyms), the plugin
 * instruments the first instruction of every IDT gate's handler. There the CPU has
 * just pushed its frame at rsp (after the error code, for the vectors that push one):
 * when the interrupted rip lies in a range, it logs the vector and the pushed RFLAGS.
 * The host tells from these whether an execution of a probed instruction followed its
 * breakpoint's #DB (vector 1) or an interrupt that returned with RF=1 (see
 * qstep/recorder/hits.py).
 *
 * Included by qstep-recorder.c after emit(), in_ranges(), read_handle() and gprs[].
 */

static uint64_t idt_addr; /* 0: no vector records */
static int idt_loaded;
static uint64_t gate_targets[256];

static int pushes_error_code(unsigned int vec)
{
    return vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 ||
           vec == 30;
}

static uint64_t read_u64(uint64_t addr, int *ok)
{
    uint64_t v = 0;
    g_byte_array_set_size(mem_buf, 0);
    *ok = qemu_plugin_read_memory_vaddr(addr, mem_buf, 8);
    if (*ok)
        memcpy(&v, mem_buf->data, 8);
    return v;
}

/* The handler addresses of the present 64-bit gates (on the vCPU thread). */
static void load_idt(void)
{
    GByteArray *idt = g_byte_array_new();
    idt_loaded = 1;
    memset(gate_targets, 0, sizeof(gate_targets));
    if (qemu_plugin_read_memory_vaddr(idt_addr, idt, 256 * 16)) {
        for (int v = 0; v < 256; v++) {
            const unsigned char *g = idt->data + 16 * v;
            uint32_t high;
            memcpy(&high, g + 8, 4);
            if (g[5] & 0x80) /* present */
                gate_targets[v] = (uint64_t)(g[0] | g[1] << 8) |
                                  (uint64_t)(g[6] | g[7] << 8) << 16 | (uint64_t)high << 32;
        }
    }
    g_byte_array_free(idt, TRUE);
}

static void on_vector_entry(unsigned int vcpu, void *udata)
{
    unsigned int vec = (unsigned int)(uintptr_t)udata;
    uint64_t frame = read_handle(gprs[4]) + (pushes_error_code(vec) ? 8 : 0);
    int ok_rip, ok_flags;
    uint64_t rip = read_u64(frame, &ok_rip);
    if (!ok_rip || !in_ranges(rip))
        return;
    uint64_t flags = read_u64(frame + 16, &ok_flags);
    uint64_t rec[3] = { 'V' | (uint64_t)vec << 8, rip, ok_flags ? flags : 0 };
    emit(rec, 3);
}

/* At translation: instrument insn if it is the first of an IDT gate's handler. */
static void instrument_vector_entry(struct qemu_plugin_insn *insn, uint64_t pc)
{
    if (!idt_addr)
        return;
    if (!idt_loaded)
        load_idt();
    for (int v = 0; v < 256; v++)
        if (gate_targets[v] == pc) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_vector_entry, QEMU_PLUGIN_CB_R_REGS,
                                                   (void *)(uintptr_t)v);
            return;
        }
}

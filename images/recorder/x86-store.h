/*
 * Which x86-64 instructions of BPF JIT code write memory, and where.
 *
 * The recorder logs the value a store replaces: before a store executes it computes
 * the destination from the registers and reads the old bytes. QEMU's memory
 * callbacks run after the access, so the address must come from the instruction.
 * Decoded here: the forms the x86-64 BPF JIT emits for stores and atomics
 * (mov r/m,r|imm; add/or/and/xor/sub r/m,r; xchg; xadd; cmpxchg; group-1 r/m,imm)
 * and the stack writes of push and call. Anything else returns 0: a store by such
 * an instruction is still logged, only without its old value.
 */
#include <stdint.h>
#include <stddef.h>

#define X86_RSP 4

struct x86_store {
    int base;      /* x86 register number 0-15 (rax, rcx, rdx, rbx, rsp, ...), -1: none */
    int index;     /* -1: none */
    int scale;
    int64_t disp;  /* with base = index = -1: the absolute address (rip-relative) */
    int size;      /* bytes */
};

static int x86_modrm_dest(const uint8_t *b, size_t n, size_t at, int rex, uint64_t pc,
                          struct x86_store *st, size_t imm_bytes)
{
    if (at >= n)
        return 0;
    uint8_t modrm = b[at++];
    int mod = modrm >> 6, rm = modrm & 7;
    if (mod == 3)
        return 0;
    st->base = rm | (rex & 1) << 3;
    st->index = -1;
    st->scale = 1;
    if (rm == 4) {
        if (at >= n)
            return 0;
        uint8_t sib = b[at++];
        st->scale = 1 << (sib >> 6);
        int index = ((sib >> 3) & 7) | (rex & 2) << 2;
        st->index = index == X86_RSP ? -1 : index;
        st->base = (sib & 7) | (rex & 1) << 3;
        if ((sib & 7) == 5 && mod == 0)
            st->base = -1;
    }
    int rip = rm == 5 && mod == 0;
    size_t disp_bytes = mod == 1 ? 1 : (mod == 2 || rip || st->base == -1) ? 4 : 0;
    if (at + disp_bytes > n)
        return 0;
    st->disp = disp_bytes == 1 ? (int8_t)b[at] : 0;
    if (disp_bytes == 4)
        st->disp = (int32_t)(b[at] | b[at + 1] << 8 | b[at + 2] << 16 | (uint32_t)b[at + 3] << 24);
    at += disp_bytes;
    if (rip) {
        st->base = -1;
        st->disp += (int64_t)(pc + at + imm_bytes);
    }
    return 1;
}

/* 1 and *st filled when the instruction at pc (bytes b[0..n)) writes memory. */
static int x86_decode_store(const uint8_t *b, size_t n, uint64_t pc, struct x86_store *st)
{
    size_t at = 0;
    int opsize16 = 0, rex = 0;
    for (; at < n; at++) {
        if (b[at] == 0x66)
            opsize16 = 1;
        else if (b[at] == 0xF0 || b[at] == 0xF2 || b[at] == 0xF3)
            continue;
        else if (b[at] == 0x64 || b[at] == 0x65)
            return 0; /* fs/gs-relative: the segment base is not a register */
        else
            break;
    }
    if (at < n && (b[at] & 0xF0) == 0x40)
        rex = b[at++];
    if (at >= n)
        return 0;
    uint8_t op = b[at++];
    int wide = rex & 8 ? 8 : opsize16 ? 2 : 4;
    if ((op >= 0x50 && op <= 0x57) || op == 0xE8) { /* push reg, call rel32 */
        *st = (struct x86_store){ .base = X86_RSP, .index = -1, .scale = 1, .disp = -8,
                                  .size = 8 };
        return 1;
    }
    if (op == 0xFF && at < n && (((b[at] >> 3) & 7) == 2 || ((b[at] >> 3) & 7) == 6)) {
        *st = (struct x86_store){ .base = X86_RSP, .index = -1, .scale = 1, .disp = -8,
                                  .size = 8 };
        return 1;
    }
    switch (op) {
    case 0x88: case 0x00: case 0x08: case 0x20: case 0x28: case 0x30: case 0x86:
        st->size = 1;
        return x86_modrm_dest(b, n, at, rex, pc, st, 0);
    case 0x89: case 0x01: case 0x09: case 0x21: case 0x29: case 0x31: case 0x87:
        st->size = wide;
        return x86_modrm_dest(b, n, at, rex, pc, st, 0);
    case 0xC6:
        st->size = 1;
        return x86_modrm_dest(b, n, at, rex, pc, st, 1);
    case 0xC7:
        st->size = wide;
        return x86_modrm_dest(b, n, at, rex, pc, st, opsize16 ? 2 : 4);
    case 0x80: case 0x81: case 0x83:
        if (at >= n || ((b[at] >> 3) & 7) == 7) /* cmp only reads */
            return 0;
        st->size = op == 0x80 ? 1 : wide;
        return x86_modrm_dest(b, n, at, rex, pc, st, op == 0x81 ? (opsize16 ? 2 : 4) : 1);
    case 0x0F:
        if (at >= n)
            return 0;
        op = b[at++];
        if (op == 0xC0 || op == 0xB0) {
            st->size = 1;
            return x86_modrm_dest(b, n, at, rex, pc, st, 0);
        }
        if (op == 0xC1 || op == 0xB1) {
            st->size = wide;
            return x86_modrm_dest(b, n, at, rex, pc, st, 0);
        }
        return 0;
    }
    return 0;
}

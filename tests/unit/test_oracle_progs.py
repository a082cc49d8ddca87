"""qstep.oracle.run_program on clang-19 BPF programs, against Python models and the host kernel.

Five XDP programs (arithmetic with div/mod by packet values, signed ops and v4
instructions, loops, bpf-to-bpf calls, atomics on the stack and a map value) are
compiled for -mcpu=v3 and v4, linked with `qstep.oracle.link`, and run on random
packets. Their results must equal a hand-written Python model of the C source and
the kernel's BPF_PROG_TEST_RUN return value for the same packet.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import clang_bpf, require_tool

from qstep.bpf import insn as bi
from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import Insn
from qstep.oracle import FlatMemory, run_program
from qstep.oracle.hostrun import load_object, prog_run
from qstep.oracle.interp import bswap, sext
from qstep.oracle.link import link_program

CFLAGS = ["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
CPUS = ("v3", "v4")
PROGS = ("arith", "signed_ops", "loop", "calls", "atomics")
PACKETS = 150
M64, M32 = (1 << 64) - 1, (1 << 32) - 1
CTX, PKT, MAP_BASE, VALUE = 0x1000, 0x10000, 0x3000_0000, 0x20000

SOURCE = r"""
#include <linux/bpf.h>

#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define NOINLINE static __attribute__((noinline))

typedef unsigned long long u64;
typedef long long s64;
typedef unsigned int u32;
typedef int s32;
typedef unsigned short u16;
typedef short s16;
typedef unsigned char u8;
typedef signed char s8;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64[2]);
} vals SEC(".maps");

#define PKT 64
#define GET(T, off) (*(T *)(p + (off)))
#define PACKET(ctx)                                                   \
    unsigned char *p = (void *)(long)(ctx)->data;                  \
    if ((void *)(p + PKT) > (void *)(long)(ctx)->data_end)          \
        return 0

static __always_inline u32 fold(u64 x)
{
    return (u32)(x ^ (x >> 32));
}

SEC("xdp")
int arith(struct xdp_md *ctx)
{
    PACKET(ctx);
    u64 a = GET(u64, 0), b = GET(u64, 8), q = a, m = a, r;
    u32 c = GET(u32, 16), d = GET(u32, 20), q32 = c, m32 = c, e = 0;

    /* the BPF runtime rules for x/0 and x%0, not C's undefined behaviour */
    asm volatile("%[q] /= %[b]; %[m] %%= %[b]" : [q] "+r"(q), [m] "+r"(m) : [b] "r"(b));
    asm volatile("%[q] /= %[d]; %[m] %%= %[d]" : [q] "+w"(q32), [m] "+w"(m32) : [d] "w"(d));
    asm volatile("if %[c] == 0 goto +1; goto +1; %[e] += 1" : [e] "+r"(e) : [c] "r"(c & 3));
    r = a + b;
    r ^= a * b;
    r -= b << (c & 63);
    r += a >> (d & 63);
    r ^= (u64)((s64)a >> (c & 63));
    r += (u32)(c * d);
    r ^= (u32)(c << (d & 31));
    r += (u32)((s32)c >> (d & 31));
    r += (u32)(c - d);
    r = r * 31 + q;
    r = r * 31 + m;
    r = r * 31 + q32;
    r = r * 31 + m32;
    return fold(r) + e;
}

SEC("xdp")
int signed_ops(struct xdp_md *ctx)
{
    PACKET(ctx);
    s64 a = GET(s64, 0), b = GET(s64, 8);
    s32 c = GET(s32, 16), d = GET(s32, 20);
    u64 r = 0;

    r += (s64)GET(s8, 24);
    r += (s64)GET(s16, 26);
    r ^= (s64)GET(s32, 28);
    r ^= (s64)(s8)a;
    r += (s64)(s16)b;
    r ^= (s64)(s32)(a >> 3);
    r += (u32)(s32)(s8)c;
    r += (u32)(s32)(s16)d;
    r += __builtin_bswap16((u16)a) + __builtin_bswap32((u32)b);
    r ^= __builtin_bswap64((u64)a);
    r += (a < b) + 2 * (c < d) + 4 * ((u64)a < (u64)b) + 8 * ((u32)c <= (u32)d) +
         16 * (a >= -5) + 32 * (c > 7) + 64 * (b <= 0) + 128 * (d != -1);
#if __BPF_CPU_VERSION__ >= 4
    s64 q = a, m = a;
    s32 q32 = c, m32 = c, e = 0;

    asm volatile("%[q] s/= %[b]; %[m] s%%= %[b]" : [q] "+r"(q), [m] "+r"(m) : [b] "r"(b));
    asm volatile("%[q] s/= %[d]; %[m] s%%= %[d]" : [q] "+w"(q32), [m] "+w"(m32) : [d] "w"(d));
    asm volatile("if %[c] == 0 goto +1; gotol +1; %[e] += 1" : [e] "+r"(e) : [c] "r"(c & 3));
    r = r * 31 + q;
    r = r * 31 + m;
    r = r * 31 + (u32)q32;
    r = r * 31 + (u32)m32;
    r += e;
    if (b != 0 && b != -1)
        r += a / b + a % b;
    if (d != 0 && d != -1)
        r += (u32)(c / d) + (u32)(c % d);
#endif
    return fold(r);
}

SEC("xdp")
int loop(struct xdp_md *ctx)
{
    PACKET(ctx);
    u64 h = 5381;
    u32 x = GET(u32, 0) | 1, steps = 0;

    for (int i = 0; i < PKT; i++)
        h = h * 33 ^ p[i];
    for (int i = 0; i < 100 && x != 1; i++) {
        x = (x & 1) ? 3 * x + 1 : x / 2;
        steps++;
    }
    return fold(h) ^ (steps << 24) ^ x;
}

NOINLINE u64 mix(u64 a, u64 b)
{
    return (a ^ (b >> 7)) * 0x9E3779B97F4A7C15ull + (b << 3);
}

NOINLINE u64 twice(u64 *slot, u64 v)
{
    u64 local[4] = {v, v + 1, v + 2, v + 3};

    *slot += v;
    return mix(*slot, local[v & 3]) + 1;
}

SEC("xdp")
int calls(struct xdp_md *ctx)
{
    PACKET(ctx);
    u64 acc = GET(u64, 0);
    u64 r = twice(&acc, GET(u64, 8));

    r ^= mix(acc, GET(u64, 16));
    return fold(r + acc);
}

SEC("xdp")
int atomics(struct xdp_md *ctx)
{
    PACKET(ctx);
    u32 key = 0;
    u64 *v = bpf_map_lookup_elem(&vals, &key);
    u64 a = GET(u64, 0), b = GET(u64, 8), c = GET(u64, 16), s = a, r = 0;
    u32 w = GET(u32, 24), x = GET(u32, 28), s32 = w;

    if (!v)
        return 1;
    v[0] = b;
    v[1] = c;
    __sync_fetch_and_add(&s, b);
    r += __sync_fetch_and_or(&s, c);
    r ^= __sync_fetch_and_and(&v[0], a);
    r += __sync_fetch_and_xor(&v[1], a);
    r += __sync_lock_test_and_set(&s, c ^ 1);
    r ^= __sync_val_compare_and_swap(&v[0], (x & 1) ? (a & b) : b, c);
    r += __sync_fetch_and_add(&s32, x);
    r += __sync_val_compare_and_swap(&s32, (x & 2) ? w + x : w, x * 3);
    __sync_fetch_and_xor(&s32, 0x5555);
    __sync_fetch_and_and(&v[1], ~0xffull);
    r += s + s32 + v[0] + v[1];
    return fold(r);
}

char LICENSE[] SEC("license") = "GPL";
"""


def u64(p: bytes, off: int) -> int:
    return int.from_bytes(p[off:off + 8], "little")


def u32(p: bytes, off: int) -> int:
    return int.from_bytes(p[off:off + 4], "little")


def fold(x: int) -> int:
    return (x ^ (x >> 32)) & M32


def tdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


# ---- Python models of the C programs -------------------------------------------------------

def model_arith(p: bytes, v4: bool) -> int:
    a, b, c, d = u64(p, 0), u64(p, 8), u32(p, 16), u32(p, 20)
    q, m = (a // b, a % b) if b else (0, a)
    q32, m32 = (c // d, c % d) if d else (0, c)
    r = ((a + b) & M64) ^ ((a * b) & M64)
    r = (r - (b << (c & 63))) & M64
    r = (r + (a >> (d & 63))) & M64
    r ^= (sext(a, 64) >> (c & 63)) & M64
    r += (c * d) & M32
    r ^= (c << (d & 31)) & M32
    r += (sext(c, 32) >> (d & 31)) & M32
    r += (c - d) & M32
    for v in (q, m, q32, m32):
        r = (r * 31 + v) & M64
    return (fold(r) + int(c & 3 == 0)) & M32


def signed_args(p: bytes) -> tuple[int, int, int, int]:
    """a, b (s64) and c, d (s32) of the packet."""
    return sext(u64(p, 0), 64), sext(u64(p, 8), 64), sext(u32(p, 16), 32), sext(u32(p, 20), 32)


def _signed_v4(p: bytes, r: int) -> int:
    a, b, c, d = signed_args(p)
    q, m = (tdiv(a, b), a - b * tdiv(a, b)) if b else (0, a)
    q32, m32 = (tdiv(c, d), c - d * tdiv(c, d)) if d else (0, c)
    for v in (q, m, q32 & M32, m32 & M32):
        r = (r * 31 + v) & M64
    r += int(c & 3 == 0)
    if b not in (0, -1):
        r += tdiv(a, b) + a - b * tdiv(a, b)
    if d not in (0, -1):
        r += ((tdiv(c, d) & M32) + ((c - d * tdiv(c, d)) & M32)) & M32
    return r & M64


def model_signed_ops(p: bytes, v4: bool) -> int:
    a, b, c, d = signed_args(p)
    r = sext(p[24], 8) + sext(u32(p, 26) & 0xFFFF, 16)
    r = (r & M64) ^ (sext(u32(p, 28), 32) & M64)
    r ^= sext(a, 8) & M64
    r += sext(b, 16)
    r = (r & M64) ^ (sext(a >> 3, 32) & M64)
    r += (sext(c, 8) & M32) + (sext(d, 16) & M32)
    r += (bswap(a, 2) + bswap(b, 4)) & M32
    r = (r & M64) ^ bswap(a, 8)
    r += (int(a < b) + 2 * int(c < d) + 4 * int(a & M64 < b & M64) + 8 * int(c & M32 <= d & M32)
          + 16 * int(a >= -5) + 32 * int(c > 7) + 64 * int(b <= 0) + 128 * int(d != -1))
    r &= M64
    return fold(_signed_v4(p, r) if v4 else r)


def model_loop(p: bytes, v4: bool) -> int:
    h = 5381
    for byte in p:
        h = (h * 33 & M64) ^ byte
    x, steps = u32(p, 0) | 1, 0
    while steps < 100 and x != 1:
        x = (3 * x + 1) & M32 if x & 1 else x // 2
        steps += 1
    return fold(h) ^ (steps << 24) ^ x


def mix(a: int, b: int) -> int:
    return ((a ^ (b >> 7)) * 0x9E3779B97F4A7C15 + (b << 3)) & M64


def model_calls(p: bytes, v4: bool) -> int:
    v = u64(p, 8)
    acc = (u64(p, 0) + v) & M64
    r = (mix(acc, (v + (v & 3)) & M64) + 1) & M64
    r ^= mix(acc, u64(p, 16))
    return fold((r + acc) & M64)


def model_atomics(p: bytes, v4: bool) -> int:
    a, b, c, w, x = u64(p, 0), u64(p, 8), u64(p, 16), u32(p, 24), u32(p, 28)
    s, r = (a + b) & M64, 0
    s, r = s | c, r + s                      # fetch_or (after a plain atomic add)
    v0, r = b & a, r ^ b                     # fetch_and on v[0]
    v1, r = c ^ a, (r + c) & M64             # fetch_xor on v[1]
    s, r = c ^ 1, (r + s) & M64              # xchg
    old = v0
    v0 = c if v0 == ((a & b) if x & 1 else b) else v0
    r ^= old                                 # cmpxchg on v[0]
    s32, r = (w + x) & M32, r + w            # 32-bit fetch_add
    old = s32
    s32 = (x * 3) & M32 if s32 == ((w + x) & M32 if x & 2 else w) else s32
    r += old                                 # 32-bit cmpxchg
    s32 ^= 0x5555
    v1 &= ~0xFF & M64
    return fold((r + s + s32 + v0 + v1) & M64)


MODELS: dict[str, Callable[[bytes, bool], int]] = {
    "arith": model_arith, "signed_ops": model_signed_ops, "loop": model_loop,
    "calls": model_calls, "atomics": model_atomics,
}

# ---- packets, objects, oracle runs ---------------------------------------------------------

LANES = (0, 1, 2, 3, 7, M64, M64 - 1, 1 << 63, (1 << 63) - 1, 0x8000_0000, 0xFFFF_FFFF,
         0x7FFF_FFFF, 0xFFFF_FFFF_8000_0000, 0xFFFF_FFFF_0000_0000)
HALVES = (0, 1, 2, 3, 7, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFFE)


def lane(rng: random.Random) -> int:
    """A boundary value, a random 64-bit value or a small one (short Collatz runs)."""
    k = rng.random()
    return rng.choice(LANES) if k < 0.4 else rng.getrandbits(64 if k < 0.75 else 12)


def half(rng: random.Random) -> int:
    return rng.choice(HALVES) if rng.random() < 0.6 else rng.getrandbits(32)


def packet(rng: random.Random) -> bytes:
    """64 bytes: a, b (u64), c, d (u32), then more lanes; often zero divisors and INT_MIN/-1."""
    lanes = [lane(rng) for _ in range(8)]
    if rng.random() < 0.15:
        lanes[0], lanes[1] = 1 << 63, M64
    elif rng.random() < 0.15:
        lanes[1] = 0
    lanes[2] = half(rng) | half(rng) << 32
    lanes[3] = half(rng) | half(rng) << 32
    return struct.pack("<8Q", *lanes)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("oracle_progs")
    src = d / "progs.c"
    src.write_text(SOURCE)
    return {cpu: clang_bpf(src, d / f"progs_{cpu}.o", f"-mcpu={cpu}") for cpu in CPUS}


def xdp_memory(p: bytes) -> FlatMemory:
    """Fake struct xdp_md at CTX (32-bit data/data_end), packet at PKT, map value at VALUE."""
    mem = FlatMemory()
    mem.write(CTX, struct.pack("<6I", PKT, PKT + len(p), PKT, 1, 0, 0))
    mem.write(PKT, p)
    mem.write(VALUE, bytes(16))
    return mem


def run_oracle(insns: list[Insn], map_index: int, p: bytes) -> int:
    def lookup(regs: list[int], mem: FlatMemory) -> int:
        assert mem.read(regs[2], 4) == bytes(4)
        return VALUE if regs[1] == MAP_BASE + map_index else 0

    def map_addr(insn: Insn) -> int:
        assert insn.src == bi.PSEUDO_MAP_IDX
        return MAP_BASE + insn.imm

    return run_program(insns, {1: CTX}, xdp_memory(p), {1: lookup}, ldimm64_value=map_addr)


Case = tuple[bytes, int]


@pytest.fixture(scope="module")
def oracle_runs(objects: dict[str, Path]) -> dict[tuple[str, str], list[Case]]:
    """(cpu, program) -> [(packet, oracle r0)], computed once for both test kinds."""
    runs: dict[tuple[str, str], list[Case]] = {}
    for cpu, path in objects.items():
        obj = BpfObject.open(path)
        map_index = obj.maps.index(obj.find_map("vals"))
        for name in PROGS:
            insns = link_program(obj, name)
            rng = random.Random(f"{cpu}/{name}")
            pkts = [packet(rng) for _ in range(PACKETS)]
            runs[cpu, name] = [(p, run_oracle(insns, map_index, p)) for p in pkts]
    return runs


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("name", PROGS)
def test_oracle_matches_model(oracle_runs: dict[tuple[str, str], list[Case]], cpu: str,
                              name: str) -> None:
    for p, r0 in oracle_runs[cpu, name]:
        assert r0 == MODELS[name](p, cpu == "v4"), p.hex()


def test_v4_object_uses_v4_instructions(objects: dict[str, Path]) -> None:
    insns = BpfObject.open(objects["v4"]).section_insns["xdp"]
    codes = {(i.code, i.off) for i in insns}
    assert (0x3F, 1) in codes and (0x3C, 1) in codes  # r s/= r, w s/= w
    assert (0xBF, 8) in codes and (0xBC, 8) in codes  # r = (s8)r, w = (s8)w
    assert any(i.code == 0xD7 for i in insns)  # bswap
    assert any(i.code == 0x06 for i in insns)  # gotol
    assert any(i.mode == bi.MODE_MEMSX and i.cls == bi.LDX for i in insns)


@pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine != "x86_64",
                    reason="loads BPF on the host: needs root on x86-64")
@pytest.mark.parametrize("cpu", CPUS)
def test_kernel_matches_oracle(objects: dict[str, Path],
                               oracle_runs: dict[tuple[str, str], list[Case]], cpu: str) -> None:
    require_tool("bpftool")
    with load_object(objects[cpu]) as fds:
        assert sorted(fds) == sorted(PROGS)
        for name in PROGS:
            for p, r0 in oracle_runs[cpu, name]:
                retval, _ = prog_run(fds[name], p)
                assert (name, retval) == (name, r0), p.hex()

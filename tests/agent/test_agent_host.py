"""Host tests of the in-guest agent (images/agent/qstep-agent.c), protocol v2.

The agent is built statically into a temporary directory and driven through
pipes (and once through a pty, like the guest's serial line). The host kernel
loads and test-runs the programs of tests/agent/bpf_src/, so these tests need
root and a working bpf() syscall; they are skipped otherwise.
"""

from __future__ import annotations

import ctypes
import os
import platform
import pty
import re
import select
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from qstep.agent.replies import split_records

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENT_SRC = ROOT / "images" / "agent" / "qstep-agent.c"
BPF_SRC = HERE / "bpf_src"
AGENT_CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-Werror"]
AGENT_LDLIBS = ["-Wl,--wrap=syscall", "-lbpf", "-lelf", "-lz", "-lzstd"]
CLANG = "clang-19"
BPF_CFLAGS = ["-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
TIMEOUT = 60.0

INT_RE = re.compile(r"-?[0-9]+")
WORD_RE = re.compile(r"[A-Za-z0-9_.:/-]+")
HEX_RE = re.compile(r"[0-9a-f]*")  # blob = "x:" + even number of these

SUBMISSION_KEYS = ["insns", "line_info_rec_size", "line_info", "func_info_rec_size", "func_info"]
BPF_LD_IMM64 = 0x18
BPF_CALL = 0x85
BPF_PSEUDO_CALL = 1
XDP_PASS, XDP_TX = 2, 3
BPF_PROG_TYPE_XDP = 6
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY = 1, 2


def _bpf_unavailable() -> str | None:
    """Reason why bpf() cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root (loads BPF programs on the host kernel)"
    nr_bpf = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
    if nr_bpf is None:
        return f"unknown bpf() syscall number on {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # BPF_MAP_CREATE of a 1-entry array: the cheapest probe of bpf().
    attr = ctypes.create_string_buffer(struct.pack("<4I", BPF_MAP_TYPE_ARRAY, 4, 4, 1), 128)
    fd = libc.syscall(nr_bpf, 0, attr, 128)
    if fd < 0:
        return f"bpf() unavailable: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    return None


@pytest.fixture(scope="module")
def agent_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _bpf_unavailable()
    if reason:
        pytest.skip(reason)
    for tool in ("gcc", CLANG):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    if not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("libbpf-dev not installed")
    out = tmp_path_factory.mktemp("agent") / "qstep-agent"
    cmd = ["gcc", *AGENT_CFLAGS, "-o", str(out), str(AGENT_SRC), *AGENT_LDLIBS]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def objs(agent_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bpf")
    built = {}
    for name, debug in (("xdp_prog", True), ("long_loop", True), ("nobtf", False)):
        out = d / f"{name}.o"
        flags = [*BPF_CFLAGS, *(["-g"] if debug else [])]
        subprocess.run(
            [CLANG, *flags, "-c", str(BPF_SRC / f"{name}.c"), "-o", str(out)], check=True
        )
        built[name] = out
    return built


@dataclass
class Reply:
    seq: int
    lines: list[tuple[str, list[object]]] = field(default_factory=list)
    error: str | None = None

    def keys(self) -> list[str]:
        return [k for k, _ in self.lines]

    def all(self, key: str) -> list[list[object]]:
        return [v for k, v in self.lines if k == key]

    def __getitem__(self, key: str) -> object:
        (values,) = self.all(key)
        assert len(values) == 1, (key, values)
        return values[0]


def _value(tok: str) -> object:
    if tok.startswith("x:"):
        assert len(tok) % 2 == 0 and HEX_RE.fullmatch(tok, 2), f"invalid blob {tok[:80]!r}"
        return bytes.fromhex(tok[2:])
    if INT_RE.fullmatch(tok):
        return int(tok)
    assert WORD_RE.fullmatch(tok), f"invalid token {tok!r}"
    return tok


def _token(arg: object) -> str:
    if isinstance(arg, bytes):
        return "x:" + arg.hex()
    return str(arg)


class Agent:
    def __init__(self, rfd: int, wfd: int, proc: subprocess.Popen) -> None:
        self.rfd, self.wfd, self.proc = rfd, wfd, proc
        self.pending = bytearray()
        self.seq = 0
        self.ready = self.readline()

    def readline(self) -> str:
        scanned = 0  # lines can be tens of MB: look for the newline in new data only
        while (end := self.pending.find(b"\n", scanned)) < 0:
            scanned = len(self.pending)
            r, _, _ = select.select([self.rfd], [], [], TIMEOUT)
            assert r, f"agent silent for {TIMEOUT}s"
            chunk = os.read(self.rfd, 1 << 22)
            assert chunk, f"agent closed its output (exit {self.proc.poll()})"
            self.pending += chunk
        line = self.pending[:end].decode()
        del self.pending[: end + 1]
        return line

    def send(self, raw: str) -> None:
        data = raw.encode()
        while data:
            data = data[os.write(self.wfd, data) :]

    def reply(self, seq: int) -> Reply:
        rep = Reply(seq)
        while True:
            line = self.readline()
            assert "\r" not in line, "CR/LF translation on the reply stream"
            parts = line.split(" ")
            assert parts[0] == str(seq), f"reply {line[:200]!r} is not for request {seq}"
            if parts[1:2] == ["ok"]:
                assert len(parts) == 2, line
                return rep
            if parts[1:2] == ["err"]:
                rep.error = line.split(" ", 2)[2]
                return rep
            assert len(parts) >= 3 and WORD_RE.fullmatch(parts[1]), line[:200]
            rep.lines.append((parts[1], [_value(t) for t in parts[2:]]))

    def request(self, verb: str, *args: object) -> Reply:
        self.seq += 1
        self.send(" ".join([str(self.seq), verb, *map(_token, args)]) + "\n")
        return self.reply(self.seq)

    def ok(self, verb: str, *args: object) -> Reply:
        rep = self.request(verb, *args)
        assert rep.error is None, f"{verb}: {rep.error}"
        return rep

    def close(self) -> None:
        for fd in {self.rfd, self.wfd}:
            os.close(fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agent(agent_bin: Path):
    proc = subprocess.Popen([str(agent_bin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin and proc.stdout
    a = Agent(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()), proc)
    proc.stdin.close()
    proc.stdout.close()
    yield a
    a.close()
    assert proc.returncode == 0


# ---------------------------------------------------------------- ELF helpers


def insn_starts(insns: bytes) -> list[int]:
    """Indices of instructions (the 2nd slot of ld_imm64 excluded)."""
    starts, i = [], 0
    while i < len(insns) // 8:
        starts.append(i)
        i += 2 if insns[8 * i] == BPF_LD_IMM64 else 1
    return starts


def func_size(obj: Path, name: str) -> int:
    with obj.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        (sym,) = symtab.get_symbol_by_name(name)
        return sym["st_size"] // 8


def objs_insns(obj: Path, name: str) -> bytes:
    """The instructions of a program without relocations or calls, as in the ELF."""
    with obj.open("rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        data = elf.get_section(sym["st_shndx"]).data()
        return data[sym["st_value"] : sym["st_value"] + sym["st_size"]]


def records(blob: bytes, rec_size: int, fmt: str) -> list[tuple[int, ...]]:
    assert len(blob) % rec_size == 0
    n = struct.calcsize(fmt)
    return [struct.unpack(fmt, blob[i : i + n]) for i in range(0, len(blob), rec_size)]


def maps_of(rep: Reply) -> dict[str, dict[str, int]]:
    keys = ("id", "type", "key_size", "value_size", "max_entries", "btf_key", "btf_value")
    return {v[0]: dict(zip(keys, v[1:], strict=True)) for v in rep.all("map")}


def u32s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 4}I", blob))


def u64s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}Q", blob))


def dump(agent: Agent, handle: int, name: str) -> tuple[int, dict[bytes, bytes]]:
    rep = agent.ok("dump", handle, name)
    return rep["value_size"], {k: v for k, v in rep.all("entry")}


# ---------------------------------------------------------------- tests


def test_ready_and_hello(agent: Agent) -> None:
    assert agent.ready == f"QSTEP-AGENT 3 READY {os.uname().release}"
    rep = agent.ok("hello")
    assert rep.lines == [("version", [3]), ("kernel", [os.uname().release])]


def test_load_reports_libbpf_submission(agent: Agent, objs: dict[str, Path]) -> None:
    obj = objs["xdp_prog"]
    rep = agent.ok("load", obj.read_bytes(), "xdp_main")
    assert rep.keys()[:8] == ["handle", "prog_id", "prog_type", *SUBMISSION_KEYS]
    assert rep["handle"] == 1 and rep["prog_id"] > 0
    assert rep["prog_type"] == BPF_PROG_TYPE_XDP

    # insns: xdp_main followed by the appended subprogram, opcodes unchanged.
    n_main, n_sub = func_size(obj, "xdp_main"), func_size(obj, "classify")
    insns = rep["insns"]
    assert len(insns) == 8 * (n_main + n_sub)
    with obj.open("rb") as f:
        elf = ELFFile(f)
        orig = (
            elf.get_section_by_name("xdp").data()[: 8 * n_main]
            + elf.get_section_by_name(".text").data()[: 8 * n_sub]
        )
    assert insns[::8] == orig[::8]

    # func_info: main at 0, classify right after it, reached by a pseudo call.
    assert rep["func_info_rec_size"] == 8
    funcs = records(rep["func_info"], 8, "<II")
    assert [off for off, _ in funcs] == [0, n_main]
    calls = [
        i + 1 + struct.unpack_from("<i", insns, 8 * i + 4)[0]
        for i in range(len(insns) // 8)
        if insns[8 * i] == BPF_CALL and insns[8 * i + 1] >> 4 == BPF_PSEUDO_CALL
    ]
    assert calls == [n_main]

    # line_info: libbpf's relocated records, strictly increasing, both functions covered.
    assert rep["line_info_rec_size"] == 16
    offs = [r[0] for r in records(rep["line_info"], 16, "<IIII")]
    assert offs[0] == 0 and n_main in offs
    assert offs == sorted(set(offs)) and offs[-1] < n_main + n_sub
    assert set(offs) <= set(insn_starts(insns))

    maps = maps_of(rep)
    assert list(maps) == ["counts", "percpu", "big", ".bss", ".data.tuning", ".rodata"]
    assert {k: maps["counts"][k] for k in ("type", "key_size", "value_size", "max_entries")} == {
        "type": BPF_MAP_TYPE_HASH,
        "key_size": 4,
        "value_size": 8,
        "max_entries": 64,
    }
    assert {k: maps[".bss"][k] for k in ("type", "key_size", "value_size", "max_entries")} == {
        "type": BPF_MAP_TYPE_ARRAY,
        "key_size": 4,
        "value_size": 8,
        "max_entries": 1,
    }
    assert maps[".rodata"]["value_size"] == 4
    assert all(m["id"] > 0 and m["btf_value"] > 0 for m in maps.values())
    assert maps["counts"]["btf_key"] > 0 and len({m["id"] for m in maps.values()}) == 6


def test_info_maps_every_instruction_to_jit(agent: Agent, objs: dict[str, Path]) -> None:
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")
    info = agent.ok("info", load["handle"])
    assert info.keys() == [
        "id",
        "type",
        "name",
        "tag",
        "xlated",
        "jited",
        "jited_ksyms",
        "jited_func_lens",
        "kline_info_rec_size",
        "kline_info",
        "jited_line_info",
        "map_ids",
    ]
    assert info["id"] == load["prog_id"] and info["type"] == BPF_PROG_TYPE_XDP
    assert info["name"] == "xdp_main" and len(info["tag"]) == 8
    xlated, jited = info["xlated"], info["jited"]
    assert xlated and len(xlated) % 8 == 0 and jited

    starts = insn_starts(load["insns"])
    first = records(load["line_info"], 16, "<IIII")[0]
    assert info["kline_info_rec_size"] == 16
    kline = records(info["kline_info"], 16, "<IIII")
    # xdp_main has no dead code: every instruction keeps its synthetic record.
    assert [lc for _, _, _, lc in kline] == starts
    assert all((fo, lo) == first[1:3] for _, fo, lo, _ in kline)
    koffs = [off for off, _, _, _ in kline]
    assert koffs == sorted(set(koffs)) and koffs[-1] < len(xlated) // 8

    ksyms, lens = u64s(info["jited_ksyms"]), u32s(info["jited_func_lens"])
    assert len(ksyms) == len(lens) == 2 and sum(lens) == len(jited)
    func_starts = [off for off, _ in records(load["func_info"], 8, "<II")]
    jaddrs = u64s(info["jited_line_info"])
    assert len(jaddrs) == len(kline)
    for (_, _, _, lc), addr in zip(kline, jaddrs, strict=True):
        f = max(i for i, s in enumerate(func_starts) if s <= lc)
        assert ksyms[f] <= addr < ksyms[f] + lens[f], (lc, hex(addr))
        if lc == func_starts[f]:
            assert addr == ksyms[f]  # a function's first record is its entry

    maps = maps_of(load)
    ids = set(u32s(info["map_ids"]))
    assert {maps["counts"]["id"], maps[".bss"]["id"]} <= ids <= {m["id"] for m in maps.values()}


def test_dead_code_loses_its_records(agent: Agent, objs: dict[str, Path]) -> None:
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_dead")
    info = agent.ok("info", load["handle"])
    starts = insn_starts(load["insns"])
    cols = [lc for _, _, _, lc in records(info["kline_info"], 16, "<IIII")]
    assert len(cols) < len(starts) and cols[0] == 0
    # The surviving records name valid original instructions, in order, and the
    # removed ones are the body of `if (debug_mode)`: one contiguous run.
    assert cols == [s for s in starts if s in set(cols)]
    removed = [i for i, s in enumerate(starts) if s not in set(cols)]
    assert removed == list(range(removed[0], removed[-1] + 1))
    assert len(u64s(info["jited_line_info"])) == len(cols)


def test_update_dump_run_roundtrip(agent: Agent, objs: dict[str, Path]) -> None:
    h = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"]
    key7, val = struct.pack("<I", 7), struct.pack("<Q", 1234)
    agent.ok("update", h, "counts", key7, val)
    assert dump(agent, h, "counts") == (8, {key7: val})

    pkt = bytes([0x42]) + bytes(range(1, 64))
    run = agent.ok("run", h, 1, pkt, b"", 256)
    assert run.keys()[:4] == ["retval", "duration", "data_out", "ctx_out"]
    assert run["retval"] == XDP_TX and run["duration"] >= 0
    assert run["data_out"] == pkt[:1] + b"\x99" + pkt[2:]
    assert run["ctx_out"] == b""

    other = bytes([0x01]) + bytes(20)
    run = agent.ok("run", h, 5, other, b"", 256)
    assert run["retval"] == XDP_PASS and run["data_out"] == other

    def u64(n: int) -> bytes:
        return struct.pack("<Q", n)

    assert dump(agent, h, "counts") == (
        8,
        {key7: val, struct.pack("<I", 0x42): u64(1), struct.pack("<I", 0x01): u64(5)},
    )
    assert dump(agent, h, ".bss") == (8, {bytes(4): u64(6)})
    assert dump(agent, h, ".rodata") == (4, {bytes(4): bytes(4)})
    assert dump(agent, h, ".data.tuning") == (4, {bytes(4): struct.pack("<i", 5)})

    # Errors leave the agent serving.
    assert (
        agent.request("update", h, "counts", b"\x01", val).error
        == "map 'counts' takes 4-byte keys and 8-byte values, got 1 and 8"
    )
    assert agent.request("update", h, ".rodata", bytes(4), bytes(4)).error.startswith(
        "update of map '.rodata': "
    )  # frozen by libbpf
    assert agent.request("dump", h, "nosuchmap").error == "unknown map 'nosuchmap'"
    assert agent.request("run", h, 1, b"\x42", b"", 64).error == "test_run: Invalid argument"
    assert agent.ok("hello")["version"] == 3


def test_unknown_program(agent: Agent, objs: dict[str, Path]) -> None:
    rep = agent.request("load", objs["xdp_prog"].read_bytes(), "nope")
    assert rep.lines == []
    assert rep.error == (
        "unknown program 'nope'; available: xdp_main, xdp_bad, xdp_dead, xdp_name_longer_than_15"
    )
    assert agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"] == 1


def test_verifier_rejection_reports_log(agent: Agent, objs: dict[str, Path]) -> None:
    rep = agent.request("load", objs["xdp_prog"].read_bytes(), "xdp_bad")
    assert rep.error == "loading program 'xdp_bad' failed: Permission denied (see verifier log)"
    # what libbpf submitted (the log's instruction indices refer to it), then the logs
    assert rep.keys() == [*SUBMISSION_KEYS, "log", "libbpf_log"]
    assert rep["insns"] == objs_insns(objs["xdp_prog"], "xdp_bad")
    offs = [r[0] for r in records(rep["line_info"], 16, "<IIII")]
    assert offs[0] == 0 and offs == sorted(set(offs)) and offs[-1] < len(rep["insns"]) // 8
    log = rep["log"].decode()
    assert "invalid access to packet" in log
    assert log.rstrip("\n").splitlines()[-1].startswith("processed ")  # the whole log
    assert "prog 'xdp_bad': BPF program load failed" in rep["libbpf_log"].decode()
    # a failed load does not take a handle
    assert agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"] == 1


def test_object_without_line_info(agent: Agent, objs: dict[str, Path]) -> None:
    rep = agent.request("load", objs["nobtf"].read_bytes(), "xdp_plain")
    assert rep.error == "object has no BTF line info; build it with clang -g"


def test_verifier_log_overflow_is_retried(agent: Agent, objs: dict[str, Path]) -> None:
    # Its level-1 log exceeds 16 MiB: the kernel says ENOSPC for a good program.
    rep = agent.ok("load", objs["long_loop"].read_bytes(), "xdp_long")
    run = agent.ok("run", rep["handle"], 1, bytes(64), b"", 64)
    assert run["retval"] in (1, 2)


def test_whole_verifier_log_of_a_huge_rejection(agent: Agent, objs: dict[str, Path]) -> None:
    rep = agent.request("load", objs["long_loop"].read_bytes(), "xdp_long_bad")
    assert (
        rep.error == "loading program 'xdp_long_bad' failed: Permission denied (see verifier log)"
    )
    # Over 16 MiB of log: the agent sends its first 64 KiB and last 960 KiB,
    # cut at line ends, around a line saying how much it left out.
    log = rep["log"].decode()
    assert len(log) <= 1 << 20
    assert log.startswith("0: R1=ctx")  # the head: not a rotated tail
    (marker,) = re.findall(r"^\.\.\. \[(\d+) bytes omitted\] \.\.\.$", log, re.M)
    head, tail = log.split(f"... [{marker} bytes omitted] ...\n")
    assert len(head) + int(marker) + len(tail) > 16 << 20
    assert (64 << 10) - 200 < len(head) <= 64 << 10 and head.endswith("\n")
    assert (960 << 10) - 200 < len(tail) <= 960 << 10
    assert re.match(r"\d+: \(", head.splitlines()[-1]) and re.match(r"\d+: \(", tail)
    lines = tail.rstrip("\n").splitlines()
    assert "invalid access to packet" in "\n".join(lines[-5:])
    assert lines[-1].startswith("processed ")


def test_malformed_requests_keep_agent_serving(agent: Agent) -> None:
    cases = [
        ("garbage", 0, "bad request: expected '<seq> <verb> [args]'"),
        ("-3 hello", 0, "bad request: expected '<seq> <verb> [args]'"),
        ("5", 5, "bad request: expected '<seq> <verb> [args]'"),
        ("6 frobnicate", 6, "unknown verb 'frobnicate'"),
        ("7 load x:abc xdp_main", 7, "bad request: argument 1 of 'load' must be a blob"),
        ("8 load x:zz xdp_main", 8, "bad request: argument 1 of 'load' must be a blob"),
        ("9 load x:00 x:00", 9, "bad request: argument 2 of 'load' must be a word"),
        ("10 info", 10, "bad request: 'info' takes 1 arguments, got 0"),
        ("11 info abc", 11, "bad request: argument 1 of 'info' must be an integer"),
        ("12 info 99", 12, "unknown handle 99"),
        ("13 run 1 1 x: x: 0", 13, "unknown handle 1"),
        ("14 unload 0", 14, "unknown handle 0"),
        (
            "15 kallsyms no_such_symbol_qstep",
            15,
            "symbol 'no_such_symbol_qstep' not found in /proc/kallsyms",
        ),
        ("16 hello " + "a " * 50, 16, "bad request: too many arguments"),
        ("17 hello x:" + "ab" * 300000, 17, "bad request: 'hello' takes 0 arguments, got 1"),
    ]
    for line, seq, err in cases:
        agent.send(line + "\n")
        rep = agent.reply(seq)
        assert rep.lines == [] and rep.error is not None and rep.error.startswith(err), line[:40]
    agent.send("\n\r\n")  # blank lines are ignored
    agent.seq = 100
    rep = agent.request("load", b"\x7fELF" + bytes(300000), "xdp_main")
    assert rep.error is not None and rep.error.startswith("cannot open BPF object: ")
    assert "not a proper ELF object" in rep["libbpf_log"].decode()
    assert agent.ok("hello")["version"] == 3


def test_kallsyms(agent: Agent) -> None:
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, kind, name = line.split()[:3]
            if kind in "tT" and int(addr, 16) and WORD_RE.fullmatch(name):
                break
    if not int(addr, 16):
        pytest.skip("kernel addresses are hidden")
    assert agent.ok("kallsyms", name).lines == [("addr", [addr])]


def test_several_handles_and_unload(agent: Agent, objs: dict[str, Path]) -> None:
    elf = objs["xdp_prog"].read_bytes()
    a, b = agent.ok("load", elf, "xdp_main"), agent.ok("load", elf, "xdp_dead")
    assert (a["handle"], b["handle"]) == (1, 2) and a["prog_id"] != b["prog_id"]
    assert maps_of(a)["counts"]["id"] != maps_of(b)["counts"]["id"]  # separate objects
    agent.ok("unload", 1)
    assert agent.request("info", 1).error == "unknown handle 1"
    assert agent.request("unload", 1).error == "unknown handle 1"
    assert agent.ok("run", 2, 1, bytes(14), b"", 14)["retval"] == XDP_PASS
    assert agent.ok("load", elf, "xdp_main")["handle"] == 3  # ids are not reused


def test_serial_device_is_raw(agent_bin: Path, objs: dict[str, Path]) -> None:
    """Over a tty (the guest's ttyS1): no echo, no CR/LF translation, no line limit."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(agent_bin), os.ttyname(slave)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    a = Agent(master, master, proc)
    try:
        os.close(slave)
        assert a.ready.startswith("QSTEP-AGENT 3 READY ")
        assert a.ok("hello").lines[0] == ("version", [3])  # not an echo of the request
        load = a.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")  # > 4 KiB line
        info = a.ok("info", load["handle"])
        assert info["name"] == "xdp_main"
        assert not a.pending
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_long_program_name_is_intercepted(agent: Agent, objs: dict[str, Path]) -> None:
    # libbpf sends the name cut to BPF_OBJ_NAME_LEN - 1 = 15 characters.
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_name_longer_than_15")
    info = agent.ok("info", load["handle"])
    assert info["name"] == "xdp_name_longer"
    assert [r[3] for r in records(info["kline_info"], 16, "<IIII")] == [0, 1]  # synthetic
    assert agent.ok("run", load["handle"], 1, bytes(14), b"", 14)["retval"] == 1  # XDP_DROP


def test_run_with_ctx(agent: Agent, objs: dict[str, Path]) -> None:
    h = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"]
    pkt = bytes([0x42]) + bytes(19)
    ctx = struct.pack("<6I", 0, len(pkt), 0, 0, 0, 0)  # struct xdp_md: data, data_end, ...
    run = agent.ok("run", h, 1, pkt, ctx, 20)
    assert (run["retval"], run["data_out"], run["ctx_out"]) == (
        XDP_TX,
        pkt[:1] + b"\x99" + pkt[2:],
        ctx,
    )
    # data_out_size 0: no output buffer, an empty data_out
    assert agent.ok("run", h, 1, pkt, b"", 0)["data_out"] == b""


def test_percpu_map_values_cover_all_cpus(agent: Agent, objs: dict[str, Path]) -> None:
    h = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"]
    with open("/sys/devices/system/cpu/possible") as f:
        ncpus = max(int(part.split("-")[-1]) for part in f.read().strip().split(",")) + 1
    per_cpu = b"".join(struct.pack("<Q", 100 + cpu) for cpu in range(ncpus))  # u32 in 8 bytes
    agent.ok("update", h, "percpu", struct.pack("<I", 1), per_cpu)
    assert dump(agent, h, "percpu") == (
        8 * ncpus,
        {struct.pack("<I", 0): bytes(8 * ncpus), struct.pack("<I", 1): per_cpu},
    )
    assert agent.request("update", h, "percpu", bytes(4), bytes(4)).error == (
        f"map 'percpu' takes 4-byte keys and {8 * ncpus}-byte values, got 4 and 4"
    )


def test_big_array_dump_sends_nonzero_entries_and_counts_the_rest(
        agent: Agent, objs: dict[str, Path]) -> None:
    h = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"]
    for index, value in ((3, b"\x05"), (99999, b"\x07"), (100000, b"\x09")):
        agent.ok("update", h, "big", struct.pack("<I", index), value)
    rep = agent.ok("dump", h, "big")  # 100001 entries: over the 100000 listed in full
    assert rep.all("entry") == [[struct.pack("<I", 3), b"\x05"],
                                [struct.pack("<I", 99999), b"\x07"],
                                [struct.pack("<I", 100000), b"\x09"]]
    assert rep["zero_entries"] == 100001 - 3 and rep["read_entries"] == 100001
    assert not {"truncated", "unlisted"} & set(rep.keys())


# ---------------------------------------------------------------- probes (docs/probes.md)
#
# The host kernel loads perf_event programs but refuses hardware breakpoints
# (EINVAL) and may have no kprobe PMU: the attach itself is tested in the guest
# (tests/vm/test_agent_probes.py). Here: setup, program load and map references,
# and the exact error that ends an attach after a successful load.

BPF_PSEUDO_MAP_FD = 1
HW_BREAKPOINT_X, HW_BREAKPOINT_W = 4, 2
RINGBUF_BYTES = 1 << 16


def bpf(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One raw instruction."""
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def ld_map_ref(dst: int, index: int) -> bytes:
    """dst = map_refs[index] (ld_imm64, src_reg BPF_PSEUDO_MAP_FD): two slots."""
    return bpf(BPF_LD_IMM64, dst, BPF_PSEUDO_MAP_FD, imm=index) + bpf(0)


RETURN_0 = bpf(0xB7, 0, imm=0) + bpf(0x95)  # r0 = 0; exit


def count_into(map_ref: int, key: int = 0) -> bytes:
    """counters[key] += 1 (atomic), the counters map being map_refs[map_ref]."""
    return b"".join(
        [
            ld_map_ref(1, map_ref),
            bpf(0x62, 10, off=-4, imm=key),  # *(u32 *)(r10 - 4) = key
            bpf(0xBF, 2, 10),  # r2 = r10
            bpf(0x07, 2, imm=-4),  # r2 += -4
            bpf(0x85, imm=1),  # call bpf_map_lookup_elem
            bpf(0x15, 0, off=2, imm=0),  # if r0 == 0 goto +2
            bpf(0xB7, 1, imm=1),  # r1 = 1
            bpf(0xDB, 0, 1, imm=0),  # lock *(u64 *)(r0 + 0) += r1
            RETURN_0,
        ]
    )


def map_refs(*ids: int) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


def jit_address(agent: Agent, objs: dict[str, Path]) -> int:
    """The JIT entry of a freshly loaded xdp_main: a realistic probe address."""
    h = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")["handle"]
    return u64s(agent.ok("info", h)["jited_ksyms"])[0]


def assert_loaded_then_attach_refused(rep: Reply, addr: int, mode: str = "auto") -> None:
    """The probe loaded, and the host kernel refused the breakpoint (or took it)."""
    if rep.error is None:
        assert rep.keys() == ["probe_handle", "attached"]
        assert (
            rep["attached"]
            in {"auto": {"kprobe", "hw_breakpoint"}, "hw": {"hw_breakpoint"}, "kprobe": {"kprobe"}}[
                mode
            ]
        )
        return
    assert rep.lines == []
    assert rep.error in (
        f"hardware breakpoint at {addr:#x}: perf_event_open: Invalid argument",
        f"hardware breakpoint at {addr:#x}: perf_event_open: No such device",
        "no free hardware breakpoint slot (x86 has 4 debug registers)",
    ), rep.error


def test_probe_setup_starts_empty_maps_when_no_probe_is_attached(agent: Agent) -> None:
    rep = agent.ok("probe_setup", RINGBUF_BYTES)
    assert rep.keys() == ["events_map_id", "counters_map_id"]
    events, counters = rep["events_map_id"], rep["counters_map_id"]
    assert events > 0 and counters > 0 and events != counters
    again = agent.ok("probe_setup", RINGBUF_BYTES * 4)  # no probe attached: new maps
    assert again["events_map_id"] > counters and again["counters_map_id"] > counters
    assert agent.ok("probe_drain").lines == [("records", [b""]), ("lost", [0])]
    for bad in (0, 1000, 4096 + 1, 3 << 12):
        assert agent.request("probe_setup", bad).error == (
            f"ring buffer size must be a power of two from 4096 to 2^30, got {bad}"
        )


def test_probe_maps_by_id(agent: Agent, objs: dict[str, Path]) -> None:
    ids = agent.ok("probe_setup", RINGBUF_BYTES)
    rep = agent.ok("dump_id", ids["counters_map_id"])
    assert rep["value_size"] == 8
    entries = rep.all("entry")
    assert [k for k, _ in entries] == [struct.pack("<I", i) for i in range(512)]
    assert {v for _, v in entries} == {bytes(8)}
    probe_events = agent.ok("dump_id", ids["events_map_id"])  # not consumed by a dump
    assert probe_events["unlisted"] == b"qstep's probe ring buffer is read with probe_drain"
    # any map of a loaded program, by its kernel id, like `dump`
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")
    agent.ok("update", load["handle"], "counts", struct.pack("<I", 3), struct.pack("<Q", 9))
    counts = agent.ok("dump_id", maps_of(load)["counts"]["id"])
    assert counts.lines == agent.ok("dump", load["handle"], "counts").lines
    assert agent.request("dump_id", 0).error == "no map with id 0"
    assert agent.request("dump_id", 1 << 31).error.startswith(f"no map with id {1 << 31}: ")


def test_probe_drain(agent: Agent) -> None:
    assert agent.request("probe_drain").error == "no probe ring buffer: send probe_setup first"
    agent.ok("probe_setup", RINGBUF_BYTES)
    assert agent.ok("probe_drain").lines == [("records", [b""]), ("lost", [0])]


def test_probe_attach_loads_the_program(agent: Agent, objs: dict[str, Path]) -> None:
    addr = jit_address(agent, objs)
    assert addr > 1 << 63  # sent as an unsigned decimal
    ids = agent.ok("probe_setup", RINGBUF_BYTES)
    refs = map_refs(ids["counters_map_id"])
    for code in (RETURN_0, count_into(0)):
        for mode in ("auto", "hw"):
            rep = agent.request("probe_attach", 0, addr, HW_BREAKPOINT_X, 8, code, refs, mode)
            assert_loaded_then_attach_refused(rep, addr, mode)
            if rep.error is None:
                agent.ok("probe_detach", rep["probe_handle"])
    # a data watchpoint takes the same path
    rep = agent.request("probe_attach", 1, addr, HW_BREAKPOINT_W, 8, RETURN_0, b"", "hw")
    assert_loaded_then_attach_refused(rep, addr, "hw")


def test_probe_attach_errors(agent: Agent, objs: dict[str, Path]) -> None:
    addr = jit_address(agent, objs)
    ids = agent.ok("probe_setup", RINGBUF_BYTES)
    refs = map_refs(ids["counters_map_id"])
    X = HW_BREAKPOINT_X

    def err(*args: object) -> str:
        rep = agent.request("probe_attach", *args)
        assert rep.error is not None
        return rep.error

    # map references: index out of range, unknown id
    assert err(0, addr, X, 8, count_into(1), refs, "auto") == (
        "instruction 0 refers to map_refs[1], but map_refs has 1 entries"
    )
    assert err(0, addr, X, 8, count_into(0), b"", "auto") == (
        "instruction 0 refers to map_refs[0], but map_refs has 0 entries"
    )
    assert err(0, addr, X, 8, count_into(0), map_refs(1 << 31), "auto").startswith(
        f"map_refs[0]: no map with id {1 << 31}: "
    )
    # the verifier's rejection comes with its log
    rep = agent.request("probe_attach", 0, addr, X, 8, bpf(0x95), b"", "auto")  # exit, r0 unset
    assert rep.error == "loading the probe program failed: Permission denied (see verifier log)"
    assert rep.keys() == ["log"] and "R0 !read_ok" in rep["log"].decode()
    # the request itself
    assert err(64, addr, X, 8, RETURN_0, b"", "auto") == "probe id must be 0..63, got 64"
    assert err(0, addr, X, 4, RETURN_0, b"", "auto").startswith(
        "bad breakpoint: bp_type 4 with bp_len 4"
    )
    assert err(0, addr, 2, 3, RETURN_0, b"", "hw").startswith(
        "bad breakpoint: bp_type 2 with bp_len 3"
    )
    assert err(0, addr, 5, 8, RETURN_0, b"", "hw").startswith("bad breakpoint: bp_type 5")
    assert (
        err(0, addr, X, 8, RETURN_0, b"", "uprobe")
        == "mode must be auto, hw or kprobe, got 'uprobe'"
    )
    assert (
        err(0, addr, 2, 8, RETURN_0, b"", "kprobe")
        == "a kprobe probes execution: bp_type must be 4"
    )
    assert err(0, addr, X, 8, RETURN_0[:-1], b"", "hw").startswith("bad request: insns must be")
    assert err(0, addr, X, 8, RETURN_0, b"\x01", "hw").startswith("bad request: insns must be")
    assert agent.request("probe_detach", 1).error == "unknown probe handle 1"
    assert agent.ok("hello")["version"] == 3


def test_kprobe_mode_at_a_jit_address(agent: Agent, objs: dict[str, Path]) -> None:
    """No kernel here takes a kprobe in BPF JIT code; the error names the step."""
    addr = jit_address(agent, objs)
    rep = agent.request("probe_attach", 0, addr, HW_BREAKPOINT_X, 8, RETURN_0, b"", "kprobe")
    if rep.error is None:  # a patched kernel
        assert rep["attached"] == "kprobe"
        return
    assert rep.error.startswith(f"kprobe at {addr:#x}: "), rep.error
    assert rep.error in (
        f"kprobe at {addr:#x}: this kernel has no kprobe PMU: No such file or directory",
        f"kprobe at {addr:#x}: perf_event_open: Invalid argument (the kernel refuses kprobes "
        "in BPF JIT code; use mode hw)",
    ), rep.error


# Offsets in struct bpf_perf_event_data (x86-64): regs.rip, then addr after regs
# and sample_period.
CTX_RIP, CTX_ADDR = 128, 176
BPF_PSEUDO_MAP_VALUE = 2


def counting_probe(probe_id: int, ctx_fields: tuple[int, ...] = ()) -> bytes:
    """counters[8 * probe_id] += 1, then a ring buffer record {probe_id, flags 0,
    hit = that counter, one u64 per ctx offset in ctx_fields}.
    map_refs: [counters, events]."""
    size = 16 + 8 * len(ctx_fields)
    rec = -size  # the record, on the stack at r10 - size
    code = [
        bpf(0xBF, 6, 1),  # r6 = ctx
        ld_map_ref(1, 0),
        bpf(0x62, 10, off=-4 + rec, imm=8 * probe_id),  # key, below the record
        bpf(0xBF, 2, 10),
        bpf(0x07, 2, imm=-4 + rec),
        bpf(0x85, imm=1),  # bpf_map_lookup_elem
    ]
    body = [
        bpf(0xB7, 1, imm=1),
        bpf(0xDB, 0, 1),  # lock *(u64 *)(r0 + 0) += r1
        bpf(0x79, 7, 0),  # r7 = *(u64 *)(r0 + 0): the hit number
        bpf(0x62, 10, off=rec, imm=probe_id),  # u32 probe_id
        bpf(0x62, 10, off=rec + 4, imm=0),  # u32 flags
        bpf(0x7B, 10, 7, off=rec + 8),  # u64 hit
    ]
    for i, off in enumerate(ctx_fields):
        body += [bpf(0x79, 1, 6, off=off), bpf(0x7B, 10, 1, off=rec + 16 + 8 * i)]
    body += [
        ld_map_ref(1, 1),
        bpf(0xBF, 2, 10),
        bpf(0x07, 2, imm=rec),
        bpf(0xB7, 3, imm=size),
        bpf(0xB7, 4, imm=0),
        bpf(0x85, imm=130),  # bpf_ringbuf_output
    ]
    skip = sum(len(b) for b in body) // 8
    return b"".join([*code, bpf(0x15, 0, off=skip, imm=0), *body, RETURN_0])


def global_address(agent: Agent, load: Reply) -> int:
    """Kernel address of the one global variable xdp_main uses (`hits` in .bss).

    The JIT materializes the ld_imm64 of a map value as movabs reg, imm64 at
    that instruction's JIT address (jited_line_info of the synthetic line info)."""
    insns = load["insns"]
    (index,) = [
        i
        for i in insn_starts(insns)
        if insns[8 * i] == BPF_LD_IMM64 and insns[8 * i + 1] >> 4 == BPF_PSEUDO_MAP_VALUE
    ]
    info = agent.ok("info", load["handle"])
    cols = [r[3] for r in records(info["kline_info"], 16, "<IIII")]
    addr = u64s(info["jited_line_info"])[cols.index(index)]
    ksyms, lens = u64s(info["jited_ksyms"]), u32s(info["jited_func_lens"])
    func = next(f for f, k in enumerate(ksyms) if k <= addr < k + lens[f])
    code = info["jited"][sum(lens[:func]) + addr - ksyms[func] :]
    assert code[0] in (0x48, 0x49) and 0xB8 <= code[1] <= 0xBF, code[:10].hex()  # movabs
    return struct.unpack_from("<Q", code, 2)[0] + struct.unpack_from("<I", insns, 8 * index + 12)[0]


def test_write_watchpoint_end_to_end(agent: Agent, objs: dict[str, Path]) -> None:
    """A data watchpoint: the host kernel accepts those, so the whole path runs here."""
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")
    hits_addr = global_address(agent, load)
    ids = agent.ok("probe_setup", RINGBUF_BYTES)
    refs = map_refs(ids["counters_map_id"], ids["events_map_id"])
    probe = counting_probe(3, (CTX_ADDR, CTX_RIP))
    rep = agent.request("probe_attach", 3, hits_addr, HW_BREAKPOINT_W, 8, probe, refs, "auto")
    if rep.error is not None and "perf_event_open" in rep.error:
        pytest.skip(f"this kernel refuses data watchpoints: {rep.error}")
    assert rep.error is None, rep.error
    assert rep.keys() == ["probe_handle", "attached"] and rep["attached"] == "hw_breakpoint"
    handle = rep["probe_handle"]

    assert agent.ok("run", load["handle"], 5, bytes(64), b"", 64)["retval"] == XDP_PASS
    counters = {k: v for k, v in agent.ok("dump_id", ids["counters_map_id"]).all("entry")}
    assert u64s(counters[struct.pack("<I", 24)]) == [5]  # probe 3, k = 0: reached
    drain = agent.ok("probe_drain")
    assert drain.keys() == ["records", "lost"] and drain["lost"] == 0
    records = split_records(drain["records"])
    assert len(records) == 5
    xdp_main = u64s(agent.ok("info", load["handle"])["jited_ksyms"])[0]
    for n, rec in enumerate(records, 1):
        probe_id, flags, hit, addr, rip = struct.unpack("<IIQQQ", rec)
        assert (probe_id, flags, hit, addr) == (3, 0, n, hits_addr)
        assert xdp_main < rip < xdp_main + 4096  # just after the write, in xdp_main
    assert u64s(dump(agent, load["handle"], ".bss")[1][bytes(4)]) == [5]
    assert agent.ok("probe_drain").lines == [("records", [b""]), ("lost", [0])]  # drained

    agent.ok("probe_detach", handle)
    assert agent.request("probe_detach", handle).error == f"unknown probe handle {handle}"
    agent.ok("run", load["handle"], 3, bytes(64), b"", 64)
    assert agent.ok("probe_drain").lines == [("records", [b""]), ("lost", [0])]  # detached
    counters = {k: v for k, v in agent.ok("dump_id", ids["counters_map_id"]).all("entry")}
    assert u64s(counters[struct.pack("<I", 24)]) == [5]
    # handles are not reused
    rep = agent.ok("probe_attach", 3, hits_addr, HW_BREAKPOINT_W, 8, probe, refs, "hw")
    assert rep["probe_handle"] == handle + 1


def test_fifth_hardware_probe_is_refused(agent: Agent, objs: dict[str, Path]) -> None:
    load = agent.ok("load", objs["xdp_prog"].read_bytes(), "xdp_main")
    hits_addr = global_address(agent, load)
    ids = agent.ok("probe_setup", RINGBUF_BYTES)
    refs = map_refs(ids["counters_map_id"], ids["events_map_id"])
    handles = []
    for p in range(4):
        rep = agent.request(
            "probe_attach", p, hits_addr, HW_BREAKPOINT_W, 8, counting_probe(p), refs, "hw"
        )
        if rep.error is not None and "perf_event_open" in rep.error:
            pytest.skip(f"this kernel refuses data watchpoints: {rep.error}")
        assert rep.error is None, rep.error
        handles.append(rep["probe_handle"])
    fifth = agent.request(
        "probe_attach", 4, hits_addr, HW_BREAKPOINT_W, 8, counting_probe(4), refs, "hw"
    )
    assert fifth.error == "no free hardware breakpoint slot (x86 has 4 debug registers)"
    agent.ok("run", load["handle"], 2, bytes(64), b"", 64)
    assert len(split_records(agent.ok("probe_drain")["records"])) == 8  # 4 probes, 2 hits
    agent.ok("probe_detach", handles[0])  # frees a slot
    agent.ok("probe_attach", 4, hits_addr, HW_BREAKPOINT_W, 8, counting_probe(4), refs, "hw")


# ---------------------------------------------------------------- foreign programs


def test_put_and_exec(agent: Agent, tmp_path: Path) -> None:
    script = tmp_path / "sub" / "hello.sh"
    script.parent.mkdir()
    body = b"#!/bin/sh\necho out $1\necho err >&2\n"
    agent.ok("put", str(script), body + b"# a longer first version\n" * 10)
    agent.ok("put", str(script), body)  # truncates
    assert script.read_bytes() == body and script.stat().st_mode & 0o777 == 0o755

    rep = agent.ok("exec", f"cat {script}".encode())
    assert rep.keys() == ["status", "output"]
    assert rep["status"] == 0 and rep["output"] == body
    rep = agent.ok("exec", f"{script} x; exit 3".encode())
    assert rep["status"] == 3 and rep["output"] == b"out x\nerr\n"
    assert agent.ok("exec", b"kill -9 $$")["status"] == 128 + 9
    assert agent.ok("exec", b"read x; echo ${x:-eof}")["output"] == b"eof\n"  # stdin /dev/null
    # A background child keeping the pipe open is not waited for.
    rep = agent.ok("exec", b"sleep 30 & echo bg")
    assert rep["status"] == 0 and rep["output"] == b"bg\n"
    assert agent.ok("exec", b"head -c 2000000 /dev/zero")["output"] == bytes(1 << 20)

    rep = agent.request("put", "relative/x", b"")
    assert rep.error == "path must be absolute, got 'relative/x'"
    assert agent.request("put", str(tmp_path / "no" / "x"), b"").error.endswith(
        "No such file or directory"
    )


@pytest.fixture
def bpffs(agent_bin: Path, tmp_path: Path):
    d = tmp_path / "bpffs"
    d.mkdir()
    res = subprocess.run(["mount", "-t", "bpf", "bpf", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount bpffs: {res.stderr.strip()}")
    yield d
    subprocess.run(["umount", str(d)], check=True)  # drops the pins


def load_pin(agent_bin: Path, obj: Path, prog: str, pin: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(agent_bin), "--load-pin", str(obj), prog, str(pin)], capture_output=True, text=True
    )


def source_line(pattern: str) -> int:
    lines = (BPF_SRC / "xdp_prog.c").read_text().splitlines()
    (n,) = [i + 1 for i, line in enumerate(lines) if pattern in line]
    return n


def test_load_pin_then_find_info_run_by_id(
    agent: Agent, agent_bin: Path, objs: dict[str, Path], bpffs: Path
) -> None:
    pin = bpffs / "xdp_main"
    res = load_pin(agent_bin, objs["xdp_prog"], "xdp_main", pin)
    assert res.returncode == 0, res.stderr
    m = re.fullmatch(r"prog_id (\d+)\n", res.stdout)
    assert m, res.stdout
    prog_id = int(m[1])

    found = agent.ok("find_prog", "pinned", str(pin))
    assert found.keys() == ["prog_id", "name", "type", "tag"]
    assert found["prog_id"] == prog_id and found["name"] == "xdp_main"
    assert found["type"] == BPF_PROG_TYPE_XDP and len(found["tag"]) == 8
    assert agent.ok("find_prog", "id", prog_id).lines == found.lines
    assert agent.ok("find_prog", "name", "xdp_main").lines == found.lines
    assert agent.ok("find_prog", "tag", found["tag"].hex()).lines == found.lines

    info = agent.ok("info_id", prog_id)
    assert info.keys()[:12] == [
        "id", "type", "name", "tag", "xlated", "jited", "jited_ksyms", "jited_func_lens",
        "kline_info_rec_size", "kline_info", "jited_line_info", "map_ids",
    ]  # fmt: skip
    assert info.keys()[12:15] == ["func_info_rec_size", "func_info", "btf"]
    assert set(info.keys()[15:]) == {"map"}
    assert info["id"] == prog_id and info["name"] == "xdp_main"
    assert info["tag"] == found["tag"]
    assert info["btf"][:2] == b"\x9f\xeb"  # BTF magic 0xeb9f, little-endian

    # func_info: xdp_main and classify, in xlated instructions.
    assert info["func_info_rec_size"] == 8
    funcs = records(info["func_info"], 8, "<II")
    assert len(funcs) == 2 and funcs[0][0] == 0
    assert 0 < funcs[1][0] < len(info["xlated"]) // 8

    # kline_info: libbpf's own records (no synthetic ones): line_col are source lines.
    kline = records(info["kline_info"], 16, "<IIII")
    lines = {lc >> 10 for _, _, _, lc in kline}
    first, last = source_line("classify(__u8 *data"), source_line("return action;") + 1
    assert kline and lines <= set(range(first, last + 1)), sorted(lines)
    assert source_line("__sync_fetch_and_add(&hits, 1);") in lines
    assert len(u64s(info["jited_line_info"])) == len(kline)

    maps = maps_of(info)
    assert sorted(m["id"] for m in maps.values()) == sorted(u32s(info["map_ids"]))
    assert maps["counts"]["type"] == BPF_MAP_TYPE_HASH and maps["counts"]["btf_key"] > 0

    run = agent.ok("run_id", prog_id, 1, bytes([0x42]) + bytes(15), b"", 64)
    assert run.keys()[:4] == ["retval", "duration", "data_out", "ctx_out"]
    assert run["retval"] == XDP_TX and run["data_out"][1] == 0x99
    assert agent.ok("run_id", prog_id, 1, bytes(16), b"", 64)["retval"] == XDP_PASS

    # Unpinned (and the loader gone), the program is unloaded.
    pin.unlink()
    rep = agent.request("find_prog", "id", prog_id)
    assert rep.error.startswith(f"no program with id {prog_id}; loaded: ")
    assert agent.request("info_id", prog_id).error.startswith(f"no program with id {prog_id}")


def test_foreign_program_errors(
    agent: Agent, agent_bin: Path, objs: dict[str, Path], bpffs: Path
) -> None:
    missing = 2**32 - 1
    assert agent.request("info_id", missing).error == (
        f"no program with id {missing}: No such file or directory"
    )
    assert agent.request("run_id", missing, 1, bytes(16), b"", 0).error.startswith(
        f"no program with id {missing}"
    )
    assert agent.request("info_id", 0).error == "no program with id 0"
    rep = agent.request("find_prog", "name", "no_such_prog")
    assert rep.error.startswith("no program with name no_such_prog; loaded: ")
    assert agent.request("find_prog", "pinned", str(bpffs / "nope")).error.startswith(
        f"no program pinned at {bpffs / 'nope'}: "
    )
    assert agent.request("find_prog", "color", "red").error == (
        "kind must be id, name, tag or pinned, got 'color'"
    )

    # Two programs named alike: ambiguous by name.
    ids = []
    for i in range(2):
        res = load_pin(agent_bin, objs["xdp_prog"], "xdp_dead", bpffs / f"d{i}")
        assert res.returncode == 0, res.stderr
        ids.append(int(res.stdout.split()[1]))
    assert agent.request("find_prog", "name", "xdp_dead").error == (
        f"several programs with name xdp_dead: ids {ids[0]}, {ids[1]}"
    )

    res = load_pin(agent_bin, objs["xdp_prog"], "nope", bpffs / "x")
    assert res.returncode != 0 and "no program 'nope'" in res.stderr
    res = load_pin(agent_bin, objs["xdp_prog"], "xdp_bad", bpffs / "x")
    assert res.returncode != 0 and "loading 'xdp_bad' failed" in res.stderr


# ---------------------------------------------------------------- real-program shapes (tests/progs)

IPV4_TCP = (bytes.fromhex("020000000001" "020000000002" "0800")
            + bytes([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9])
            + struct.pack(">HH", 1234, 22) + bytes(22))  # 60 bytes, TCP 1234 -> 22


@pytest.fixture(scope="module")
def progs(agent_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """tests/progs objects built with the README's flags (-g)."""
    d = tmp_path_factory.mktemp("progs")
    built = {}
    for name in ("maptypes", "legacy", "config"):
        out = d / f"{name}.o"
        subprocess.run([CLANG, *BPF_CFLAGS, "-g", "-c", str(ROOT / "tests" / "progs" /
                                                           f"{name}.bpf.c"), "-o", str(out)],
                       check=True)
        built[name] = out.read_bytes()
    return built


def test_every_map_type_dumps_or_says_why_not(agent: Agent, progs: dict[str, bytes]) -> None:
    load = agent.ok("load", progs["maptypes"], "maptypes_main")
    h = load["handle"]
    agent.ok("update", h, "prefixes", struct.pack("<I4B", 8, 10, 0, 0, 0), struct.pack("<I", 7))
    assert agent.ok("run", h, 1, IPV4_TCP, b"", 0)["retval"] == 2  # XDP_PASS: 10/8 is known
    dumps = {name: agent.ok("dump", h, name) for name in maps_of(load)}
    event = struct.pack("<I4BIi", 60, 10, 1, 2, 3, 7, 0)  # perf output: 0, the agent reads
    assert dumps["events"].all("record") == [[event]]
    assert dumps["perf_events"].all("record") == [[event + bytes(4)]]  # perf pads to 8n - 4
    assert dumps["perf_events"]["lost"] == 0
    assert agent.ok("dump", h, "events").all("record") == []  # consumed by the first dump
    assert dumps["flows"].all("entry") == [[bytes([10, 1, 2, 3]), struct.pack("<Q", 1)]]
    assert dumps["prefixes"].all("entry") == [[struct.pack("<I4B", 8, 10, 0, 0, 0),
                                               struct.pack("<I", 7)]]
    assert dumps["fifo"].all("entry") == [[b"", struct.pack("<I", 60)]]
    assert dumps["lifo"].all("entry") == [[b"", struct.pack("<I", 6)]]
    assert dumps["big"].all("entry") == [[struct.pack("<I", 60000), struct.pack("<I", 1)],
                                         [struct.pack("<I", (1 << 20) - 1),
                                          struct.pack("<I", 0xABCD)]]
    assert (dumps["big"]["zero_entries"], dumps["big"]["read_entries"]) == ((1 << 20) - 2, 1 << 20)
    assert dumps["outer"].all("entry")[0][1] == struct.pack("<I", maps_of(load)["inner_one"]["id"])
    for name in ("jumps", "tx_ports", "cpus"):
        assert dumps[name].keys() == ["value_size"], name  # iterable, and empty
    assert dumps["seen"]["unlisted"] == b"a bloom filter answers membership queries only"
    assert dumps["sk_data"]["unlisted"] == (
        b"it cannot be iterated: not supported for this map type (ENOTSUPP)")
    # A queue and a stack keep their values across dumps, in order.
    agent.ok("run", h, 1, IPV4_TCP[:59], b"", 0)
    assert agent.ok("dump", h, "fifo").all("entry") == [[b"", struct.pack("<I", n)]
                                                        for n in (60, 59)]
    assert agent.ok("dump", h, "lifo").all("entry") == [[b"", struct.pack("<I", 6)]] * 2
    assert agent.ok("dump", h, "fifo").all("entry")[1] == [b"", struct.pack("<I", 59)]


def test_load_options(agent: Agent, progs: dict[str, bytes]) -> None:
    assert agent.request("load", progs["legacy"], "cls_ssh_guard").error == (
        "program 'cls_ssh_guard': libbpf knows no program type for its section "
        "'classifier/ingress'; give the program type")
    load = agent.ok("load", progs["legacy"], "cls_ssh_guard", "prog_type", 3)
    assert load["prog_type"] == 3
    assert agent.ok("run", load["handle"], 1, IPV4_TCP, b"", 0)["retval"] == 2  # TC_ACT_SHOT
    xdp = agent.ok("load", progs["legacy"], "xdp_ttl_guard", "attach_type", 37, "prog_type", 6)
    assert xdp["prog_type"] == 6
    rodata_size = maps_of(agent.ok("load", progs["config"], "config_main"))[".rodata"]["value_size"]
    rodata = bytearray(rodata_size)  # blocked_port @0 (u16), block_action @4, verbose @8
    rodata[0:2], rodata[4:8] = struct.pack("<H", 22), struct.pack("<I", 3)
    cfg = agent.ok("load", progs["config"], "config_main", "initial_value", ".rodata",
                   bytes(rodata))
    assert agent.ok("run", cfg["handle"], 1, IPV4_TCP, b"", 0)["retval"] == 3  # XDP_TX
    for args, error in (
            (("prog_type",), "bad request: prog_type takes a non-negative integer"),
            (("prog_type", -1), "bad request: prog_type takes a non-negative integer"),
            (("colour", 1), "bad request: unknown load option 'colour'"),
            (("initial_value", ".rodata"), "bad request: initial_value takes a map name and a "
             "blob (at most 8)"),
            (("initial_value", ".rodata", b"\0"),
             f"initial value of '.rodata' must be {rodata_size} bytes, got 1"),
            (("initial_value", "nope", b"\0"), "map 'nope' has no initial value to set "
             "(global data sections: .rodata, .data, .bss)")):
        assert agent.request("load", progs["config"], "config_main", *args).error == error


def test_run_reports_stream_output_where_the_kernel_has_streams(
        agent: Agent, progs: dict[str, bytes]) -> None:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    h = agent.ok("load", progs["config"], "config_main")["handle"]
    rep = agent.ok("run", h, 1, IPV4_TCP, b"", 0)
    if (major, minor) >= (6, 17):  # BPF_PROG_STREAM_READ_BY_FD
        assert rep["stream_stdout"] == b"" and rep["stream_stderr"] == b""
    else:
        assert not {"stream_stdout", "stream_stderr"} & set(rep.keys())


def test_module_load_refuses_a_bad_image(agent: Agent) -> None:
    err = agent.request("module_load", "bogus", b"not an ELF").error
    assert err is not None and err.startswith("loading module bogus failed: ")

"""The agent's replies as typed records: the one place that reads reply tokens.

Each ``decode_*`` function takes the raw ``Reply`` of one verb and returns a
frozen dataclass; the rest of qstep never looks at reply keys or blobs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from qstep.agent.protocol import Reply
from qstep.bpf.btf import Btf, FuncInfo, LineInfo, decode_func_info, decode_line_info
from qstep.errors import GuestError
from qstep.runoutput import RunOutput, split_trace

_KLINE = struct.Struct("<IIII")  # insn_off, file_name_off, line_off, line_col


@dataclass(frozen=True)
class InfoRecords:
    """A func_info or line_info array in the kernel's format (offsets in instructions)."""

    blob: bytes = b""
    rec_size: int = 0

    def lines(self, btf: Btf) -> list[LineInfo]:
        """The records as line_info, names and text read from ``btf``."""
        return decode_line_info(self.blob, self.rec_size, btf) if self.blob else []

    def funcs(self, btf: Btf) -> list[FuncInfo]:
        """The records as func_info, function names read from ``btf``."""
        return decode_func_info(self.blob, self.rec_size, btf) if self.blob else []


@dataclass(frozen=True)
class KernelLine:
    """One record of the kernel's ``line_info`` (``insn_off`` is an xlated index)."""

    insn_off: int
    file_name_off: int
    line_off: int
    line_col: int


@dataclass(frozen=True)
class MapInfo:
    """A map of a loaded program, as the kernel describes it."""

    name: str
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    btf_key_type_id: int
    btf_value_type_id: int


@dataclass(frozen=True)
class LoadInfo:
    """What libbpf handed the kernel for one loaded program (``load``)."""

    handle: int
    prog_id: int
    prog_type: int
    insns: bytes  # the final instructions, after libbpf's relocations
    line_info: InfoRecords  # libbpf's own line_info, original instruction offsets
    func_info: InfoRecords  # libbpf's func_info, original instruction offsets
    maps: dict[str, MapInfo]
    verbose_log: str = ""  # the verifier's log when the load asked for it


@dataclass(frozen=True)
class ProgInfo:
    """The kernel's ``bpf_prog_info`` of a program (``info`` / ``info_id``)."""

    prog_id: int
    prog_type: int
    name: str  # the kernel's name: at most 15 characters
    tag: str  # hex
    xlated: bytes
    jited: bytes
    jited_ksyms: list[int]
    jited_func_lens: list[int]
    kline_info: InfoRecords
    jited_line_info: list[int]
    map_ids: list[int]
    func_info: InfoRecords | None = None  # the kernel's, xlated offsets (info_id)
    btf: bytes | None = None  # the program's BTF (info_id)
    maps: dict[str, MapInfo] = field(default_factory=dict)  # (info_id)

    def kernel_lines(self) -> list[KernelLine]:
        """The kernel's line_info records with raw string offsets."""
        rec, blob, size = _KLINE, self.kline_info.blob, self.kline_info.rec_size
        if size < rec.size:
            return []
        return [KernelLine(*rec.unpack_from(blob, off))
                for off in range(0, len(blob) - rec.size + 1, size)]


@dataclass(frozen=True)
class RunResult:
    """The outcome of one BPF_PROG_TEST_RUN."""

    retval: int
    duration_ns: int
    data_out: bytes
    ctx_out: bytes
    output: RunOutput = field(default_factory=RunOutput)  # bpf_printk, BPF streams


@dataclass(frozen=True)
class FoundProgram:
    """A program in the guest found by id, name, tag or pinned path."""

    prog_id: int
    name: str
    prog_type: int
    tag: str


@dataclass(frozen=True)
class MapDump:
    """A map's contents: entries (queue/stack: empty keys, in pop order), ring buffer
    records, and the limits of the listing (``truncated`` when the agent stopped
    early, ``unlisted`` why it stopped or could not start)."""

    entries: list[tuple[bytes, bytes]]
    truncated: bool = False
    records: list[bytes] = field(default_factory=list)
    zero_entries: int | None = None  # huge arrays: all-zero entries not sent
    read_entries: int | None = None  # huge arrays: entries read
    unlisted: str | None = None
    lost: int = 0  # perf event arrays: records the kernel or the agent dropped


@dataclass(frozen=True)
class ProbeChannel:
    """The maps every probe writes to: the event ring buffer and the counters array."""

    events_map_id: int
    counters_map_id: int


@dataclass(frozen=True)
class AttachedProbe:
    """A probe program attached in the guest; ``attached`` says how (e.g. hw breakpoint)."""

    handle: int
    attached: str


@dataclass(frozen=True)
class ProbeRecords:
    """The records drained from the probe ring buffer, and how many were lost."""

    records: list[bytes]
    lost: int


@dataclass(frozen=True)
class CommandResult:
    """A shell command run in the guest."""

    status: int
    output: str


@dataclass(frozen=True)
class RejectedLoad:
    """What a failed ``load`` sent before its error: the verifier log and line info."""

    log: str
    line_info: InfoRecords


def _u32s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 4}I", blob[: len(blob) // 4 * 4]))


def _u64s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}Q", blob[: len(blob) // 8 * 8]))


def _records(reply: Reply, key: str, size_key: str) -> InfoRecords:
    if not reply.has(key):
        return InfoRecords()
    return InfoRecords(reply.blob(key), reply.int(size_key) if reply.has(size_key) else 0)


def decode_maps(reply: Reply) -> dict[str, MapInfo]:
    """The ``map`` lines of a reply, by map name."""
    maps = {}
    for vals in reply.all("map"):
        name, *rest = vals
        if len(rest) != 7 or not all(isinstance(n, int) for n in rest):
            raise GuestError(f"malformed map line from the agent: {vals!r}")
        maps[str(name)] = MapInfo(str(name), *(int(n) for n in rest))
    return maps


def decode_load(reply: Reply) -> LoadInfo:
    """The reply to ``load``."""
    return LoadInfo(
        handle=reply.int("handle"), prog_id=reply.int("prog_id"),
        prog_type=reply.int("prog_type"), insns=reply.blob("insns"),
        line_info=_records(reply, "line_info", "line_info_rec_size"),
        func_info=_records(reply, "func_info", "func_info_rec_size"),
        maps=decode_maps(reply),
        verbose_log=(reply.blob("verbose_log").decode(errors="replace")
                     if reply.has("verbose_log") else ""))


def decode_rejected(reply: Reply) -> RejectedLoad:
    """The lines of a failed ``load`` (its ``err`` is the exception message)."""
    return RejectedLoad(error_log(reply), _records(reply, "line_info", "line_info_rec_size"))


def decode_prog_info(reply: Reply) -> ProgInfo:
    """The reply to ``info`` (a program qstep loaded) or ``info_id`` (any program)."""
    return ProgInfo(
        prog_id=reply.int("id"), prog_type=reply.int("type"), name=str(reply.get("name")),
        tag=reply.blob("tag").hex(), xlated=reply.blob("xlated"), jited=reply.blob("jited"),
        jited_ksyms=_u64s(reply.blob("jited_ksyms")),
        jited_func_lens=_u32s(reply.blob("jited_func_lens")),
        kline_info=_records(reply, "kline_info", "kline_info_rec_size"),
        jited_line_info=_u64s(reply.blob("jited_line_info")),
        map_ids=_u32s(reply.blob("map_ids")),
        func_info=(_records(reply, "func_info", "func_info_rec_size")
                   if reply.has("func_info") else None),
        btf=reply.blob("btf") if reply.has("btf") else None,
        maps=decode_maps(reply))


def decode_run(reply: Reply) -> RunResult:
    """The reply to ``run`` / ``run_id``."""
    return RunResult(reply.int("retval"), reply.int("duration"), reply.blob("data_out"),
                     reply.blob("ctx_out"), decode_output(reply))


def decode_output(reply: Reply) -> RunOutput:
    """The program's output lines of a ``run`` / ``run_id`` reply."""
    def text(key: str) -> str | None:
        return error_log(reply, key) if reply.has(key) else None
    printk, other = split_trace(text("printk") or "")
    return RunOutput(printk, other, _count(reply, "printk_lost") or 0,
                     text("stream_stdout"), text("stream_stderr"))


def _count(reply: Reply, key: str) -> int | None:
    return reply.int(key) if reply.has(key) else None


def several_ids(message: str) -> list[int]:
    """The ids of ``find_prog``'s "several programs with K V: ids A, B" error; else []."""
    head, sep, ids = message.rpartition(": ids ")
    if not sep or not head.startswith("several programs"):
        return []
    return [int(i) for i in ids.split(", ") if i.strip().isdigit()]


def decode_found(reply: Reply) -> FoundProgram:
    """The reply to ``find_prog``."""
    return FoundProgram(reply.int("prog_id"), str(reply.get("name")), reply.int("type"),
                        reply.blob("tag").hex())


def decode_dump(reply: Reply) -> MapDump:
    """The reply to ``dump`` / ``dump_id``."""
    entries = [(v[0], v[1]) for v in reply.all("entry")
               if len(v) == 2 and isinstance(v[0], bytes) and isinstance(v[1], bytes)]
    return MapDump(entries, reply.has("truncated"),
                   records=[v[0] for v in reply.all("record") if v and isinstance(v[0], bytes)],
                   zero_entries=_count(reply, "zero_entries"),
                   read_entries=_count(reply, "read_entries"),
                   unlisted=error_log(reply, "unlisted") if reply.has("unlisted") else None,
                   lost=_count(reply, "lost") or 0)


def decode_probe_channel(reply: Reply) -> ProbeChannel:
    """The reply to ``probe_setup``."""
    return ProbeChannel(reply.int("events_map_id"), reply.int("counters_map_id"))


def decode_attached(reply: Reply) -> AttachedProbe:
    """The reply to ``probe_attach``."""
    return AttachedProbe(reply.int("probe_handle"), str(reply.get("attached")))


def decode_drain(reply: Reply) -> ProbeRecords:
    """The reply to ``probe_drain``."""
    records = split_records(reply.blob("records")) if reply.has("records") else []
    return ProbeRecords(records, reply.int("lost") if reply.has("lost") else 0)


def split_records(blob: bytes) -> list[bytes]:
    """Records packed as ``u32 size`` + bytes, one after another."""
    records, off = [], 0
    while off + 4 <= len(blob):
        size = int.from_bytes(blob[off:off + 4], "little")
        if off + 4 + size > len(blob):
            raise GuestError(f"probe records: a record of {size} bytes at {off} runs past "
                             f"the {len(blob)} bytes the agent sent")
        records.append(blob[off + 4:off + 4 + size])
        off += 4 + size
    return records


def decode_command(reply: Reply) -> CommandResult:
    """The reply to ``exec``."""
    return CommandResult(reply.int("status"), reply.blob("output").decode(errors="replace"))


def decode_file(reply: Reply) -> bytes:
    """The reply to ``get``: the file's bytes."""
    return reply.blob("data")


def decode_address(reply: Reply) -> int:
    """The reply to ``kallsyms``: a hex address."""
    return int(str(reply.get("addr")), 16)


def error_log(reply: Reply, key: str = "log") -> str:
    """A text blob (e.g. the verifier log) sent before an ``err`` line; empty if none."""
    return reply.blob(key).decode(errors="replace") if reply.has(key) else ""

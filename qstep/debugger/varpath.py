"""C variable paths in the debugger: ``var``, ``*ptr``, ``s.member``, ``p->member``,
``a[2]``, ``p[1]``, chained (``cnt->hits[2]``), typed by DWARF."""

from __future__ import annotations

import re
from dataclasses import dataclass

from qstep.dwarf.format import members
from qstep.dwarf.location import MachineState
from qstep.dwarf.types import ARRAY, POINTER, STRUCT, UNION, VOID, CType
from qstep.dwarf.values import Value, in_memory
from qstep.errors import UsageError

_TOKEN = re.compile(r"\s*(->|\.|\[|\]|\*|[A-Za-z_]\w*|\d+|0x[0-9a-fA-F]+)")
IDENT = re.compile(r"[A-Za-z_]\w*")
# Program contexts whose field accesses the verifier rewrites (not real memory layouts).
CTX_TYPES = frozenset({"xdp_md", "__sk_buff", "bpf_sock_ops", "sk_msg_md", "sk_reuseport_md",
                       "bpf_sk_lookup", "bpf_sysctl", "bpf_sockopt", "bpf_cgroup_dev_ctx",
                       "bpf_sock_addr", "bpf_sock"})


@dataclass(frozen=True)
class Step:
    kind: str  # "member" | "arrow" | "index" | "deref"
    arg: str | int
    column: int


@dataclass(frozen=True)
class VarPath:
    name: str
    steps: tuple[Step, ...]


def parse_path(text: str) -> VarPath | None:
    """A variable path, or None when ``text`` is some other expression."""
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        tokens.append((m.group(1), m.start(1)))
        pos = m.end()
    derefs = []
    while tokens and tokens[0][0] == "*":
        derefs.append(tokens.pop(0)[1])
    if not tokens or not IDENT.fullmatch(tokens[0][0]):
        return None
    name = tokens.pop(0)[0]
    steps = _steps(tokens)
    if steps is None:
        return None
    return VarPath(name, tuple(steps) + tuple(Step("deref", "", c) for c in reversed(derefs)))


def _steps(tokens: list[tuple[str, int]]) -> list[Step] | None:
    steps = []
    while tokens:
        tok, col = tokens.pop(0)
        if tok in (".", "->") and tokens and IDENT.fullmatch(tokens[0][0]):
            steps.append(Step("member" if tok == "." else "arrow", tokens.pop(0)[0], col))
        elif tok == "[" and len(tokens) >= 2 and tokens[1][0] == "]":
            index = tokens.pop(0)[0]
            tokens.pop(0)
            if not index[0].isdigit():
                return None
            steps.append(Step("index", int(index, 0), col))
        else:
            return None
    return steps


def apply_steps(value: Value, path: VarPath, text: str, state: MachineState) -> Value:
    """Follow members, indexes and dereferences; errors name the expression and column."""
    for step in path.steps:
        value = _apply(value, step, text, state)
    return value


def _error(text: str, step: Step, message: str) -> UsageError:
    return UsageError(f"{text}: column {step.column + 1}: {message}")


def _apply(value: Value, step: Step, text: str, state: MachineState) -> Value:
    t = value.type.strip()
    if step.kind == "deref" or step.kind == "arrow":
        value = _deref(value, step, text, state, 0)
        if step.kind == "deref":
            return value
        t = value.type.strip()
    if step.kind in ("member", "arrow"):
        return _member(value, t, step, text)
    assert isinstance(step.arg, int)
    if t.kind == ARRAY:
        if step.arg >= t.element_count:
            raise _error(text, step, f"index {step.arg} is out of bounds of "
                                     f"{value.type.c_name()}")
        return _element(value, t, step.arg)
    if t.kind == POINTER:
        return _deref(value, step, text, state, step.arg)
    raise _error(text, step, f"cannot index a {value.type.c_name()}")


def _element(value: Value, t: CType, index: int) -> Value:
    size = t.element.byte_size
    return value.part(index * size, size, t.element)


def _member(value: Value, t: CType, step: Step, text: str) -> Value:
    if t.kind not in (STRUCT, UNION):
        raise _error(text, step, f"{value.type.c_name()} is not a struct or union"
                     + (" (use ->)" if t.kind == POINTER and step.kind == "member" else ""))
    found = dict(members(value))
    if step.arg not in found:
        names = ", ".join(m.name for m in t.members)
        raise _error(text, step, f"{value.type.c_name()} has no member '{step.arg}' "
                                 f"(members: {names})")
    return found[str(step.arg)]


def _deref(value: Value, step: Step, text: str, state: MachineState, index: int) -> Value:
    t = value.type.strip()
    if t.kind != POINTER:
        raise _error(text, step, f"cannot dereference a {value.type.c_name()}")
    target = t.target
    if target is None or target.strip().kind == VOID:
        raise _error(text, step, f"cannot dereference a {value.type.c_name()} (cast it first)")
    if target.strip().name in CTX_TYPES:
        raise _error(text, step, f"struct {target.strip().name} is a context the kernel "
                                 "rewrites accesses to; its memory is a different kernel "
                                 "object, so it cannot be read as that struct")
    if not value.available:
        raise _error(text, step, "the pointer's value is not available here")
    addr = int.from_bytes(value.data, "little") + index * target.byte_size
    if addr == 0:
        raise _error(text, step, "the pointer is NULL")
    return in_memory(target, addr, state)


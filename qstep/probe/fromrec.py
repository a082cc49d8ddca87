"""``inspect`` specs evaluated from a recording, with the in-guest probes' semantics.

At every recorded execution of a location's JIT address the spec sees the registers
before that instruction and memory and maps as they were then (``recmemory``).
The outcome is what the in-guest probe would have written: conditions that fail
to evaluate (unreadable memory, an absent key, division by zero) are false, and a
print item that fails keeps the value a zeroed probe record decodes to, with its
error flag. What the recording does not determine is never guessed: a condition
over it is counted as undecided, a print item shows as not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qstep.errors import UsageError
from qstep.expr.ast import Expr, Index, Name, Value
from qstep.expr.evaluate import evaluate
from qstep.loaded import LoadedProgram
from qstep.probe.recmemory import NotRecorded, RecordedMaps, RecordedMemory
from qstep.probe.records import MapValue, RecordLayout, decode_record
from qstep.probe.spec import Spec
from qstep.recorder.recording import Recording

INT_SIZES = (1, 2, 4, 8)


@dataclass
class Outcome:
    """One location's verdict at one recorded execution."""

    decided: bool = True  # False: the condition needs what the recording lacks
    true: bool = False
    values: list[int | bytes | MapValue] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)
    unrecorded: dict[int, str] = field(default_factory=dict)  # item -> why
    why: str = ""


class RecordedEnv:
    """``evaluate``'s view of a recorded instruction: registers, memory, maps."""

    def __init__(self, regs: tuple[int, ...], memory: RecordedMemory,
                 prog: LoadedProgram) -> None:
        self._regs = regs
        self._memory = memory
        self._prog = prog

    def reg(self, n: int) -> int:
        return self._regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        return self._memory.read(addr, size)

    def name(self, name: str) -> Value:
        raise UsageError(f"map {name} needs a key here: {name}[KEY]")

    def lookup(self, name: str, key: Value) -> Value:
        value = self.value(name, key)
        if value is None:
            raise UsageError(f"{name}: no such key")
        return int.from_bytes(value, "little") if len(value) in INT_SIZES else value

    def value(self, name: str, key: Value) -> bytes | None:
        """The value under ``key`` (encoded as probes encode it), None if absent."""
        info = self._prog.maps[name]
        if isinstance(key, int):
            raw = (key & ((1 << (8 * info.key_size)) - 1)).to_bytes(info.key_size, "little")
        else:
            raw = key
        return self._memory.maps.lookup(name, raw)


def evaluate_at(spec: Spec, layout: RecordLayout, env: RecordedEnv) -> Outcome:
    """The condition and, when it holds, the print items of ``spec`` in ``env``."""
    out = Outcome()
    cond = spec.condition
    if isinstance(cond, Expr):
        try:
            value = evaluate(cond, env)
            out.true = bool(value) if isinstance(value, int) else any(value)
        except NotRecorded as err:
            out.decided, out.why = False, str(err)
            return out
        except UsageError:
            return out
    else:
        out.true = True
    zero = decode_record(layout.probe_id.to_bytes(4, "little") + bytes(layout.size - 4),
                         layout).values
    for i, item in enumerate(spec.action.prints):
        try:
            out.values.append(_item(item, layout, i, env, zero[i]))
        except NotRecorded as err:
            out.values.append(zero[i])
            out.unrecorded[i] = str(err)
        except UsageError:
            out.values.append(zero[i])
            out.failed.add(i)
    return out


def _item(item: Expr, layout: RecordLayout, i: int, env: RecordedEnv,
          zero: int | bytes | MapValue) -> int | bytes | MapValue:
    kind = layout.fields[i].kind
    if kind == "literal":
        return zero
    if kind == "lookup":
        assert isinstance(item, Index)
        name = item.base.name
        value = env.value(name, evaluate(item.key, env))
        return MapValue(name, value is not None, (value or bytes(layout.fields[i].size),))
    if kind == "array":
        assert isinstance(item, Name)
        count, size = layout.fields[i].count, layout.fields[i].size
        entries = tuple(env.value(item.name, k) or bytes(size) for k in range(count))
        return MapValue(item.name, True, entries, whole=True)
    result = evaluate(item, env)
    if kind == "bytes" and isinstance(result, int):
        return result.to_bytes(layout.fields[i].size, "little")
    return result


Located = tuple[object, Spec, RecordLayout]  # (a location handle, its spec, its layout)


def evaluate_recording(rec: Recording, packet: bytes, maps: RecordedMaps,
                       where: dict[int, list[Located]],
                       found: Callable[[object, Outcome], None]) -> None:
    """Walk the recording once; at each execution of an address in ``where`` (JIT
    address -> locations), evaluate each location's spec and hand the outcome to
    ``found`` (in execution order)."""
    memory = RecordedMemory(rec, maps, packet)
    for k, step in enumerate(rec.steps):
        here = where.get(step.site.jit_start or -1)
        if here:
            memory.pos = k
            env = RecordedEnv(memory.regs[k], memory, rec.prog)
            for handle, spec, layout in here:
                found(handle, evaluate_at(spec, layout, env))
        memory.advance(k)


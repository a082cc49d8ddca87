"""``watch``/``rwatch``/``awatch EXPR``: hardware watchpoints on C objects.

The expression's address and size come from its DWARF type (x86 debug registers
watch 1, 2, 4 or 8 aligned bytes). A hit reports the BPF instruction and source
line that accessed the object, with its old and new values typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qstep.debugger.engine import Debugger, Event
from qstep.dwarf.format import format_value
from qstep.dwarf.values import Value
from qstep.errors import UsageError

KINDS = {"watch": "write", "rwatch": "read", "awatch": "access"}
LABELS = {"write": "Hardware watchpoint", "read": "Hardware read watchpoint",
          "access": "Hardware access (read/write) watchpoint"}


@dataclass
class Watch:
    """One watched C object."""

    number: int
    text: str
    kind: str
    value: Value  # the value when armed or last seen

    @property
    def addr(self) -> int:
        assert self.value.address is not None
        return self.value.address

    @property
    def size(self) -> int:
        return len(self.value.data)


class Watches:
    """The C-level watchpoints of one debugger."""

    def __init__(self, dbg: Debugger) -> None:
        self.dbg = dbg
        self.items: list[Watch] = []
        self._next = 1

    def add(self, command: str, text: str, value: Value) -> Watch:
        kind = KINDS[command]
        if value.address is None:
            raise UsageError(f"{text}: not in memory here (a register or a constant); "
                             "only memory can be watched")
        size = len(value.data)
        if size not in (1, 2, 4, 8) or value.address % size:
            raise UsageError(f"{text}: {size} bytes at {value.address:#x}; x86 watches 1, 2, "
                             "4 or 8 aligned bytes (watch a member or an element)")
        self.dbg.set_watchpoint(value.address, size, kind)
        watch = Watch(self._next, text, kind, value)
        self._next += 1
        self.items.append(watch)
        return watch

    def remove(self, number: int) -> None:
        """Delete watch ``number`` (its watchpoint too, unless another watch shares it)."""
        watch = next((w for w in self.items if w.number == number), None)
        if watch is None:
            raise UsageError(f"no watchpoint number {number}")
        self.items.remove(watch)
        key = (watch.addr, watch.size, watch.kind)
        if all((w.addr, w.size, w.kind) != key for w in self.items):
            self.dbg.clear_watchpoint(*key)

    def report(self, event: Event) -> tuple[list[str], list[dict[str, Any]]]:
        """Lines and data for a watchpoint stop: which watch, the access, old → new."""
        addr = event.watch_addr
        lines, data = [], []
        for w in self.items:
            if addr is not None and not w.addr <= addr < w.addr + w.size:
                continue
            new = Value(w.value.type, self.dbg.read_memory(w.addr, w.size),
                        (True,) * w.size, w.addr)
            site = self.dbg.accessing_site()
            where = (f"insn {site.index} ({site.source.short()})" if site and site.source
                     else f"insn {site.index}" if site else "outside the program")
            old_text, new_text = format_value(w.value, w.text), format_value(new, w.text)
            lines += [f"{LABELS[w.kind]} {w.number}: {w.text}", f"accessed by {where}"]
            lines += ([f"Value = {new_text}"] if old_text == new_text else
                      [f"Old value = {old_text}", f"New value = {new_text}"])
            data.append({"watch": w.number, "expr": w.text, "kind": w.kind,
                         "insn": site.index if site else None,
                         "line": site.source.line if site and site.source else None,
                         "old": old_text, "new": new_text})
            w.value = new
        return lines, data

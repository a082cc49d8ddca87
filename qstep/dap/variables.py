"""DAP variable references: each expandable value gets a number until the program moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qstep.dwarf.format import elements, format_value, members
from qstep.dwarf.types import ARRAY, STRUCT, UNION
from qstep.dwarf.values import Value

Children = Callable[[], list[dict[str, Any]]]


class Handles:
    """Reference number → the function listing its children (reset at every resume)."""

    def __init__(self) -> None:
        self._children: dict[int, Children] = {}
        self._names: dict[tuple[int, str], str] = {}  # (ref, name) -> evaluateName

    def reset(self) -> None:
        self._children.clear()
        self._names.clear()

    def add(self, children: Children) -> int:
        ref = len(self._children) + 1
        self._children[ref] = children
        return ref

    def children(self, ref: int) -> list[dict[str, Any]]:
        if ref not in self._children:
            return []
        listed = self._children[ref]()
        for var in listed:
            if var.get("evaluateName"):
                self._names[(ref, var["name"])] = var["evaluateName"]
        return listed

    def evaluate_name(self, ref: int, name: str) -> str | None:
        """The expression of child ``name`` of ``ref`` (as listed by ``children``)."""
        return self._names.get((ref, name))

    def value_variable(self, name: str, value: Value, evaluate_name: str = "") -> dict[str, Any]:
        """A DAP Variable for a typed C value; structs, unions and arrays expand."""
        kind = value.type.strip().kind
        ref = 0
        if kind in (STRUCT, UNION) and value.available:
            ref = self.add(lambda: [self.value_variable(
                n or "<anonymous>", v, f"{evaluate_name}.{n}" if evaluate_name and n else "")
                for n, v in members(value)])
        elif kind == ARRAY and value.available:
            ref = self.add(lambda: [self.value_variable(
                f"[{i}]", v, f"{evaluate_name}[{i}]" if evaluate_name else "")
                for i, v in enumerate(elements(value))])
        out: dict[str, Any] = {"name": name, "value": format_value(value, name),
                               "type": value.type.c_name(), "variablesReference": ref}
        if evaluate_name:
            out["evaluateName"] = evaluate_name
        if value.address is not None:
            out["memoryReference"] = hex(value.address)
        return out

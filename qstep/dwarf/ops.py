"""pyelftools' parsed DWARF operations → ``qstep.dwarf.location`` pieces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from elftools.dwarf.dwarf_expr import DWARFExprParser

from qstep.dwarf.location import Location, Op, Piece

# (bits, signed) of the base type DW_OP_convert names, by CU-relative DIE offset.
ConvertType = Callable[[int], tuple[int, bool]]
# (section, offset) of a .debug_addr index.
AddrIndex = Callable[[int], tuple[str, int]]


def _simple(name: str, args: list[Any]) -> Op | None:
    for prefix, kind in (("DW_OP_lit", "lit"), ("DW_OP_reg", "reg"), ("DW_OP_breg", "breg")):
        suffix = name[len(prefix):]
        if name.startswith(prefix) and suffix.isdigit():
            n = int(suffix)
            return Op(kind, (n,)) if kind != "breg" else Op("breg", (n, args[0]))
    if name.startswith("DW_OP_const") and name not in ("DW_OP_const_type",):
        return Op("const", (args[0],))
    return None


def convert_ops(parsed: Sequence[Any], convert: ConvertType, addr: AddrIndex) -> list[Op]:
    """pyelftools ``DWARFExprOp`` list → ``Op`` list (``piece`` ops kept as markers)."""
    out = []
    for p in parsed:
        name, args = p.op_name, list(p.args)
        simple = _simple(name, args)
        if simple is not None:
            out.append(simple)
        elif name == "DW_OP_regx":
            out.append(Op("reg", (args[0],)))
        elif name == "DW_OP_bregx":
            out.append(Op("breg", (args[0], args[1])))
        elif name in ("DW_OP_convert", "DW_OP_GNU_convert"):
            out.append(Op("convert", convert(args[0]) if args[0] else (0, False)))
        elif name in ("DW_OP_entry_value", "DW_OP_GNU_entry_value"):
            inner = tuple(o for o in convert_ops(args[0], convert, addr) if o.name != "piece")
            out.append(Op("entry_value", (inner,)))
        elif name == "DW_OP_addrx":
            out.append(Op("addr", addr(args[0])))
        elif name == "DW_OP_implicit_value":
            out.append(Op("implicit_value", (args[0], bytes(args[1]))))
        else:
            out.append(Op(name.removeprefix("DW_OP_"), tuple(args)))
    return out


def to_location(ops: list[Op]) -> Location:
    """Split at ``piece`` ops; an expression without pieces is one whole-object piece."""
    pieces: list[Piece] = []
    current: list[Op] = []
    for op in ops:
        if op.name == "piece":
            pieces.append(Piece(op.args[0], tuple(current)))
            current = []
        elif op.name == "bit_piece":
            pieces.append(Piece(None, ()))  # unsupported: the whole value is unavailable
            return Location(tuple(pieces))
        else:
            current.append(op)
    if current or not pieces:
        pieces.append(Piece(None, tuple(current)))
    return Location(tuple(pieces))


def parse_location(expr: Sequence[int], parser: DWARFExprParser, convert: ConvertType,
                   addr: AddrIndex) -> Location:
    return to_location(convert_ops(parser.parse_expr(expr), convert, addr))

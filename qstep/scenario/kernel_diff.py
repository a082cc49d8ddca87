"""What two kernels made of the same program, instruction by instruction.

For every original BPF instruction: the verifier's rewrite (xlated code, when the
verifier changed its shape or removed it) and the x86 code the JIT emitted for it. Kernel
addresses (helper calls, jumps, constants that are kernel pointers) differ between any
two boots, so x86 text is compared with absolute addresses replaced by ``ADDR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qstep.listing import disassemble_x86, patched_text
from qstep.loaded import InsnSite, LoadedProgram

_KERNEL_ADDR = re.compile(r"0xffff[0-9a-f]{12}")


@dataclass(frozen=True)
class InsnCode:
    """One kernel's code for one original instruction."""

    xlated: tuple[str, ...]  # the verifier's replacement, () when the shape is unchanged
    x86: tuple[str, ...]
    removed: bool


@dataclass(frozen=True)
class InsnDiff:
    """An instruction whose code differs between the two kernels."""

    index: int
    function: str
    source: str
    old: InsnCode
    new: InsnCode


def insn_code(prog: LoadedProgram, site: InsnSite) -> InsnCode:
    if site.removed:
        return InsnCode((), (), True)
    x86: tuple[str, ...] = ()
    if site.jit_start is not None and site.jit_end is not None:
        code = prog.jit_bytes(site.jit_start, site.jit_end)
        x86 = tuple(_normalized(x.text) for x in disassemble_x86(code, site.jit_start))
    return InsnCode(tuple(patched_text(prog, site)), x86, False)


def _normalized(text: str) -> str:
    """x86 text with addresses that depend on where the code landed made neutral."""
    text = _KERNEL_ADDR.sub("ADDR", text)
    return re.sub(r"^(call|jmp|j[a-z]+) 0x[0-9a-f]+$", r"\1 TARGET", text)


def diff_programs(old: LoadedProgram, new: LoadedProgram) -> list[InsnDiff]:
    """Instructions (by original index) whose xlated or x86 code differs."""
    diffs = []
    for index in sorted(set(old.sites) & set(new.sites)):
        a, b = old.sites[index], new.sites[index]
        code_a, code_b = insn_code(old, a), insn_code(new, b)
        if code_a != code_b:
            source = a.source.short() if a.source else "?"
            diffs.append(InsnDiff(index, a.function.name, source, code_a, code_b))
    return diffs


def format_diff(diff: InsnDiff, old_name: str, new_name: str) -> list[str]:
    """Side by side text of one instruction's difference."""
    lines = [f"insn {diff.index} ({diff.function}, {diff.source}):"]
    for name, code in ((old_name, diff.old), (new_name, diff.new)):
        if code.removed:
            lines.append(f"  {name}: removed by the verifier")
            continue
        if code.xlated:
            lines.append(f"  {name}: verifier rewrote it as: " + "; ".join(code.xlated))
        lines.append(f"  {name}: x86 ({len(code.x86)}): " + "; ".join(code.x86))
    return lines

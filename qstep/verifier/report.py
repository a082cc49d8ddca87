"""A checked run as JSON and as text: the same in ``trace --check-verifier``, ``qstep
test`` (``verifier_check``) and ``qstep verify-verifier`` (docs/json.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qstep.loaded import LoadedProgram
from qstep.verifier.check import Finding

if TYPE_CHECKING:
    from qstep.verifier.runcheck import VerifierCheck


def source_line(prog: LoadedProgram, insn: int) -> str | None:
    site = prog.sites.get(insn)
    if site is None or site.source is None:
        return None
    return f"{site.source.file.rsplit('/', 1)[-1]}:{site.source.line}"


def check_json(check: VerifierCheck, prog: LoadedProgram) -> dict[str, Any]:
    """The JSON form (docs/json.md, "verifier_check")."""
    r = check.report
    return {"trace_insns": check.trace_insns, "traced_by": check.traced_by,
            "steps": r.steps, "registers": r.registers, "pointers": r.pointers,
            "unchecked": r.unchecked, "prunes": r.prunes, "paths": r.paths,
            "stopped": r.stopped, "findings": [finding_json(f, prog) for f in r.findings]}


def finding_json(f: Finding, prog: LoadedProgram) -> dict[str, Any]:
    return {"step": f.step, "insn": f.insn, "line": source_line(prog, f.insn),
            "reg": f"r{f.reg}", "value": f.value, "shown": f.shown or None,
            "verifier": f.claim.describe(), "pruned_at": f.pruned_at}


def check_summary(data: dict[str, Any]) -> str:
    """One line: how much was checked and what was found."""
    found = len(data["findings"])
    return (f"verifier check: {data['steps']} of {data['trace_insns']} instructions "
            f"followed, {data['registers'] + data['pointers']} values checked, "
            f"{data['unchecked']} not, {found} soundness violation{'s' * (found != 1)}")


def check_lines(data: dict[str, Any]) -> list[str]:
    """The text form of `check_json`'s result."""
    lines = [f"verifier check: {data['steps']} of {data['trace_insns']} instructions "
             f"followed on the verifier's paths ({data['traced_by']}), "
             f"{data['registers']} scalar values and {data['pointers']} pointer types "
             f"checked, {data['prunes']} pruning points"]
    if data["unchecked"]:
        lines.append(f"  {data['unchecked']} values not checked: after a pruning point the "
                     "verifier compared only precise scalars and pointers, and what is "
                     "computed from them")
    if data["stopped"]:
        lines.append(f"  check ended {data['stopped']}")
    if not data["findings"]:
        lines.append("  0 soundness violations: every value lies inside the verifier's bounds")
    lines += [finding_text(f) for f in data["findings"]]
    return lines


def finding_text(f: dict[str, Any]) -> str:
    where = f" ({f['line']})" if f["line"] else ""
    value = f"{f['value']:#x}" + (f" ({f['shown']})" if f["shown"] else "")
    older = ("" if f["pruned_at"] is None else
             f" on the older path it pruned against at insn {f['pruned_at']}")
    return (f"  VIOLATION step {f['step']}, insn {f['insn']}{where}: {f['reg']} = {value}, "
            f"the verifier proved {f['verifier']}{older}")

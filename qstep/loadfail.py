"""Why a load failed, in words: libbpf's own messages, and what to do about
the common causes (a section name without a program type, a kfunc or type
from a kernel module that is not loaded)."""

from __future__ import annotations

import re

LOG_BLOCK = re.compile(r"^[^\n]*-- BEGIN PROG LOAD LOG --.*?-- END PROG LOAD LOG --\n?",
                       re.S | re.M)
MISSING_KSYM = re.compile(r"extern \((?:func|var) ksym\) '(\w+)': not found")
NO_PROG_TYPE = "libbpf knows no program type"


def libbpf_messages(libbpf_log: str) -> list[str]:
    """libbpf's warnings without the verifier log it repeats."""
    return [line for line in LOG_BLOCK.sub("", libbpf_log).splitlines() if line.strip()]


def missing_ksyms(libbpf_log: str) -> list[str]:
    """Kernel symbols (kfuncs, ksym variables) libbpf found in no loaded BTF."""
    return sorted(set(MISSING_KSYM.findall(libbpf_log)))


def explain(prog_name: str, agent_message: str, libbpf_log: str,
            modules_tried: dict[str, list[str]]) -> str:
    """One message: what failed, libbpf's words, and a hint where there is one.

    ``modules_tried`` maps each missing kernel symbol to the modules that were
    searched for it and loaded (empty: none has it).
    """
    lines = [f"loading {prog_name} failed: {agent_message}"]
    if NO_PROG_TYPE in agent_message:
        lines[0] = lines[0].removesuffix("; give the program type") + (
            "; pass --prog-type (e.g. xdp, sched_cls) and, if the type needs one, "
            "--attach-type")
    lines += [f"  {line}" for line in libbpf_messages(libbpf_log)]
    for symbol in missing_ksyms(libbpf_log):
        found = modules_tried.get(symbol)
        lines.append(f"  hint: '{symbol}' is in no kernel module of this kernel"
                     if found == [] else
                     f"  hint: '{symbol}' is provided by module(s) {', '.join(found)}, "
                     "loaded, but the symbol is still missing" if found else
                     f"  hint: '{symbol}' may come from a kernel module: pass --modules NAME")
    return "\n".join(lines)

"""How a program is loaded beyond its object: program and attach type, global
variables set before load (``--set NAME=VALUE``, as libbpf skeletons do), and
kernel modules the program needs."""

from __future__ import annotations

from dataclasses import dataclass

from qstep.agent.protocol import Token
from qstep.bpf import values
from qstep.bpf.btf import KIND_DATASEC, KIND_VAR
from qstep.bpf.elf import BpfObject
from qstep.bpf.progarray import prog_array_targets
from qstep.bpf.uapi import AttachType, ProgType
from qstep.errors import UsageError

# Aliases users know from libbpf section names and bpftool.
PROG_TYPE_ALIASES = {"tc": ProgType.SCHED_CLS, "classifier": ProgType.SCHED_CLS,
                     "action": ProgType.SCHED_ACT, "socket": ProgType.SOCKET_FILTER,
                     "cgroup_skb": ProgType.CGROUP_SKB}


@dataclass(frozen=True)
class LoadOptions:
    """Everything about a load that the object itself does not say."""

    prog_type: int | None = None
    attach_type: int | None = None
    sets: tuple[str, ...] = ()  # NAME=VALUE, typed through the object's BTF
    modules: tuple[str, ...] = ()  # kernel modules to load first
    verifier_log_size: int | None = None  # keep the verifier's log (level 2) of this size

    def agent_tokens(self, obj: BpfObject) -> list[Token]:
        """The options of the agent's ``load`` verb (docs/agent-protocol.md)."""
        tokens: list[Token] = []
        if self.prog_type is not None:
            tokens += ["prog_type", self.prog_type]
        if self.attach_type is not None:
            tokens += ["attach_type", self.attach_type]
        for section, data in initial_values(obj, self.sets).items():
            tokens += ["initial_value", section, data]
        for name in prog_array_targets(obj):
            tokens += ["also", name]
        if self.verifier_log_size is not None:
            tokens += ["verbose_log", 2, self.verifier_log_size]
        return tokens


def _enum_value(text: str, enum: type[ProgType] | type[AttachType], what: str,
                aliases: dict[str, ProgType] | None = None) -> int:
    name = text.strip().lower().removeprefix("bpf_prog_type_").removeprefix("bpf_")
    if aliases and name in aliases:
        return int(aliases[name])
    if name.isdigit():
        return int(name)
    member = enum.__members__.get(name.upper())
    if member is None:
        known = ", ".join(sorted(m.lower() for m in enum.__members__))
        raise UsageError(f"unknown {what} '{text}'; known: {known}")
    return int(member)


def parse_prog_type(text: str) -> int:
    """``xdp``, ``sched_cls`` (or ``tc``), ``BPF_PROG_TYPE_XDP`` or a number."""
    return _enum_value(text, ProgType, "program type", PROG_TYPE_ALIASES)


def parse_attach_type(text: str) -> int:
    """``xdp``, ``cgroup_inet_ingress``, ``BPF_XDP`` or a number."""
    return _enum_value(text, AttachType, "attach type")


def global_variables(obj: BpfObject) -> dict[str, tuple[str, int, int]]:
    """Global variables of the object: name → (section, offset, BTF type id)."""
    found: dict[str, tuple[str, int, int]] = {}
    for t in obj.btf.types:
        if t.kind != KIND_DATASEC or not t.name.startswith((".rodata", ".data", ".bss")):
            continue
        for vsi in t.var_secinfos:
            var = obj.btf.type_by_id(vsi.type_id)
            if var.kind == KIND_VAR and "." not in var.name:  # not static locals
                found[var.name] = (t.name, vsi.offset, var.size_or_type)
    return found


def initial_values(obj: BpfObject, sets: tuple[str, ...]) -> dict[str, bytes]:
    """Section name → its whole initial contents with every ``NAME=VALUE`` applied."""
    if not sets:
        return {}
    variables = global_variables(obj)
    sections: dict[str, bytearray] = {}
    for text in sets:
        name, value_text = values.split_key_value(text)
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise UsageError(f"--set {name}: no global variable '{name}' in {obj.path.name} "
                             f"(globals: {known})")
        section, offset, type_id = variables[name]
        data = values.parse_value(value_text, obj.btf, type_id, f"--set {name}")
        contents = sections.setdefault(section, bytearray(obj.section_data(section)))
        contents[offset:offset + len(data)] = data
    return {name: bytes(contents) for name, contents in sections.items()}

"""``qstep disasm``: the three-way listing of a loaded program."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from qstep.commands.common import (
    SessionScope,
    Setup,
    add_program_options,
    add_vm_options,
    make_session,
    program_in_session,
    program_source,
    read_setup,
)
from qstep.commands.options import add_json_option
from qstep.dwarf.placement import annotate
from qstep.errors import UsageError
from qstep.listing import FunctionListing, build_listing, format_listing, listing_json
from qstep.loaded import LoadedProgram
from qstep.session import FromObject, ProgramSource, Session

FOREIGN_NOTE = (
    "Instructions are numbered as the kernel holds them (after the verifier's rewrites);\n"
    "'qstep disasm OBJECT' numbers them as in the object, which differs where the verifier\n"
    "removed or inserted instructions. The same instruction has the same JIT offset in its\n"
    "function in both; here only the first instruction of each line-info record has one.\n")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("disasm", help="show source / BPF / x86 side by side")
    add_program_options(p)
    add_json_option(p, "one object")
    p.add_argument("--vars", action="store_true",
                   help="show which C variables live in which register/stack slot (DWARF)")
    add_vm_options(p)
    p.set_defaults(func=main)


@dataclass
class DisasmOutcome:
    """The loaded program and its three-way listing."""

    session: Session
    prog: LoadedProgram
    listing: list[FunctionListing]

    def as_json(self) -> dict[str, Any]:
        """``qstep disasm --json``'s object (docs/json.md)."""
        return {"program": self.prog.name, "id": self.prog.prog_id,
                "kernel": self.session.release, "functions": listing_json(self.listing)}


def disasm_program(args: argparse.Namespace,
                   sessions: SessionScope = make_session) -> DisasmOutcome:
    """Load the program in a guest from ``sessions`` and build its listing."""
    setup: Setup = read_setup(args)
    source = program_source(args)
    if args.vars and not isinstance(source, FromObject):
        raise UsageError("--vars needs the object file (DWARF); a program loaded in the "
                         "guest has only BTF")
    with sessions(args) as session, \
            program_in_session(session, source, setup, quiet=args.json) as prog:
        pass
    return DisasmOutcome(session, prog, build_listing(prog, variables(args, source, prog)))


def main(args: argparse.Namespace) -> int:
    out = disasm_program(args)
    session, prog, listing = out.session, out.prog, out.listing
    if args.json:
        print(json.dumps(out.as_json(), indent=1))
        return 0
    removed = sum(1 for s in prog.sites.values() if s.removed)
    print(f"{prog.name} ({prog.type_name}, tag {prog.tag}) on {session.release}: "
          f"{len(prog.sites)} instructions, {removed} removed by the verifier, "
          f"{len(prog.jited_image)} bytes of x86\n")
    if prog.foreign:
        print(FOREIGN_NOTE)
    print(format_listing(listing))
    return 0


def variables(args: argparse.Namespace, source: ProgramSource,
              prog: LoadedProgram) -> dict[int, str] | None:
    """--vars: where each C variable lives (needs the object's DWARF)."""
    return annotate(source.obj, prog) if args.vars and isinstance(source, FromObject) else None

"""``qstep disasm``: the three-way listing of a loaded program."""

from __future__ import annotations

import argparse
import json

from qstep.commands.common import (
    add_object_options,
    add_vm_options,
    load_options,
    make_session,
    open_program,
    print_cmd,
)
from qstep.dwarf.placement import annotate
from qstep.listing import build_listing, format_listing, listing_json


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("disasm", help="show source / BPF / x86 side by side")
    add_object_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--vars", action="store_true",
                   help="show which C variables live in which register/stack slot (DWARF)")
    add_vm_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    obj, prog_name = open_program(args)
    session = make_session(args)
    if args.print_cmd:
        print_cmd(session)
        return 0
    with session:
        prog = session.load(obj, prog_name, load_options(args))
    listing = build_listing(prog, annotate(obj, prog) if args.vars else None)
    if args.json:
        print(json.dumps({"program": prog.name, "id": prog.prog_id, "kernel": session.release,
                          "functions": listing_json(listing)}, indent=1))
        return 0
    removed = sum(1 for s in prog.sites.values() if s.removed)
    print(f"{prog.name} ({prog.type_name}, tag {prog.tag}) on {session.release}: "
          f"{len(prog.sites)} instructions, {removed} removed by the verifier, "
          f"{len(prog.jited_image)} bytes of x86\n")
    print(format_listing(listing))
    return 0

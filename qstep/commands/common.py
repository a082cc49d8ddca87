"""Options and steps shared by the subcommands that boot a guest."""

from __future__ import annotations

import argparse
from pathlib import Path

from qstep.bpf.elf import BpfObject
from qstep.errors import UsageError
from qstep.loadopts import LoadOptions, parse_attach_type, parse_prog_type
from qstep.session import Session
from qstep.vm.qemu_cmd import printable, qemu_argv


def add_vm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", help="kernel: 6.1 (default), 6.12, a package name "
                        "or a path to a bzImage")
    parser.add_argument("--accel", choices=["tcg", "kvm"], default="tcg",
                        help="QEMU accelerator (default tcg)")
    parser.add_argument("--print-cmd", action="store_true",
                        help="print the QEMU command line and exit")


def add_object_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("object", type=Path, help="BPF ELF object (clang -target bpf -g)")
    parser.add_argument("--prog", help="program name or section (default: the only one)")
    add_load_options(parser)


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """How the program is loaded: type, globals set before load, kernel modules."""
    parser.add_argument("--prog-type", type=parse_prog_type, metavar="TYPE",
                        help="program type when the section name gives none (xdp, sched_cls "
                        "or tc, socket_filter, ...; e.g. for SEC(\"classifier/x\"))")
    parser.add_argument("--attach-type", type=parse_attach_type, metavar="TYPE",
                        help="expected attach type (xdp, cgroup_inet_ingress, ...)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a global variable before load (const volatile .rodata "
                        "config, .data, .bss), typed through BTF like --map values")
    parser.add_argument("--modules", action="append", default=[], metavar="NAME[,NAME]",
                        help="load these kernel modules in the guest first (with their "
                        "dependencies), e.g. nf_conntrack")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The ``add_load_options`` choices as ``LoadOptions``."""
    modules = tuple(m for arg in args.modules for m in arg.split(",") if m)
    return LoadOptions(args.prog_type, args.attach_type, tuple(args.set), modules)


def make_session(args: argparse.Namespace) -> Session:
    return Session(kernel=args.kernel, accel=args.accel)


def print_cmd(session: Session) -> None:
    """Print the QEMU command line (sockets under a placeholder directory)."""
    machine = session.prepare()
    env = [f"{k}={v}" for k, v in machine.emulator.env.items()]
    print(printable([*env, *qemu_argv(machine.make_config(Path("$QSTEP_VM_DIR")))]))


def open_program(args: argparse.Namespace) -> tuple[BpfObject, str]:
    """Open the object and pick the program (by name or section)."""
    obj = BpfObject.open(args.object)
    if args.prog:
        return obj, obj.find_program(args.prog).name
    if len(obj.programs) > 1:
        names = ", ".join(f"{p.name} ({p.section})" for p in obj.programs)
        raise UsageError(f"{args.object} has several programs; pick one with --prog: {names}")
    return obj, obj.programs[0].name

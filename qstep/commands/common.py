"""Options and steps shared by the subcommands that boot a guest.

Every command that works on one program (``disasm``, ``run``, ``debug``,
``trace``, ``inspect``) takes it the same way: a BPF object (``--prog`` picks
one of its programs) or ``id N`` / ``name NAME`` / ``tag TAG`` / ``pinned PATH``
for a program already in the guest, loaded there by ``--guest-cmd``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qstep.agent.replies import MapInfo
from qstep.bpf.elf import BpfObject
from qstep.bpf.progtypes import packet_size_problem, section_prog_type
from qstep.commands.options import KERNEL_HELP, add_accel_option
from qstep.errors import MachineError, UsageError
from qstep.loaded import LoadedProgram
from qstep.loadopts import LoadOptions, parse_attach_type, parse_prog_type
from qstep.session import SELECTORS, FromObject, InGuest, ProgramSource, Session
from qstep.userinput import MapEntry, encode_entry, read_map_file
from qstep.vm.qemu_cmd import printable, qemu_argv

PROGRAM_HELP = ("a BPF ELF object (clang -target bpf -g), or 'id N', 'name NAME', 'tag TAG', "
                "'pinned PATH' for a program loaded in the guest (see --guest-cmd)")


def add_vm_options(parser: argparse.ArgumentParser) -> None:
    """--kernel, --accel, --print-cmd."""
    parser.add_argument("--kernel", help=KERNEL_HELP)
    add_accel_option(parser)
    parser.add_argument("--print-cmd", action="store_true",
                        help="print the QEMU command line and exit")


def add_object_options(parser: argparse.ArgumentParser,
                       help_text: str = "BPF ELF object (clang -target bpf -g)") -> None:
    """PROG (an object file) and --prog."""
    parser.add_argument("object", type=Path, metavar="PROG", help=help_text)
    parser.add_argument("--prog", help="program name or section (default: the only one)")


def add_program_options(parser: argparse.ArgumentParser, value: bool = True) -> None:
    """PROG [VALUE], --prog, the load options, --guest-file, --guest-cmd.

    Without ``value`` the selector's value is the first of the command's other
    positionals (``inspect``), taken by ``program_source``.
    """
    add_object_options(parser, PROGRAM_HELP)
    if value:
        parser.add_argument("selector_value", nargs="?", metavar="VALUE",
                            help="the id, name, tag or pinned path when PROG is a selector")
    add_load_options(parser)
    parser.add_argument("--guest-file", action="append", default=[], metavar="LOCAL:GUEST",
                        help="copy a file into the guest first (repeatable)")
    parser.add_argument("--guest-cmd", action="append", default=[], metavar="CMD",
                        help="run a shell command in the guest first, e.g. a loader: "
                        "'qstep-agent --load-pin /tmp/x.o PROG /sys/fs/bpf/x' (repeatable)")


def add_input_options(parser: argparse.ArgumentParser, several_packets: bool,
                      required: bool = True, reload: bool = False) -> None:
    """--packet (once, or repeatable), --map, --maps. With ``reload`` the command loads
    the program afresh for each packet (maps start from --map/--maps each time)."""
    if several_packets:
        persist = ("each on a freshly loaded program" if reload
                   else "maps persist between them")
        parser.add_argument("--packet", required=required, action="append",
                            default=None if required else [],
                            help="packet: a file (hex text or raw) or hex; repeat to run "
                            f"several packets in turn ({persist})")
    else:
        parser.add_argument("--packet", required=required,
                            help="packet: a file (hex text or raw) or hex")
    parser.add_argument("--map", nargs=2, action="append", default=[],
                        metavar=("NAME", "KEY=VALUE"),
                        help="write a map entry before the run (typed: ints, IPs, {field: v})")
    parser.add_argument("--maps", type=Path, metavar="FILE",
                        help="file of 'NAME KEY=VALUE' lines")


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
    parser.add_argument("--verifier-log", action="store_true",
                        help="keep the verifier's detailed (level 2) log of the load: the "
                        "debugger's 'info verifier' shows what it proved at each stop")


VERIFIER_LOG_BYTES = 256 << 20  # a log buffer; the kernel writes only what it logs


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The ``add_load_options`` choices as ``LoadOptions``."""
    modules = tuple(m for arg in args.modules for m in arg.split(",") if m)
    return LoadOptions(args.prog_type, args.attach_type, tuple(args.set), modules,
                       VERIFIER_LOG_BYTES if getattr(args, "verifier_log", False) else None)


def make_session(args: argparse.Namespace) -> Session:
    """An unstarted session for --kernel and --accel."""
    return Session(kernel=args.kernel, accel=args.accel)


# Where a command's guest comes from: ``make_session`` (the command line: booted for the
# command, shut down after it) or a long-lived one the caller keeps (``qstep mcp``).
SessionScope = Callable[[argparse.Namespace], AbstractContextManager[Session]]


def print_cmd(args: argparse.Namespace) -> int:
    """--print-cmd: print the QEMU command line (sockets under a placeholder directory)."""
    machine = make_session(args).prepare()
    env = [f"{k}={v}" for k, v in machine.emulator.env.items()]
    print(printable([*env, *qemu_argv(machine.make_config(Path("$QSTEP_VM_DIR")))]))
    return 0


def open_object(args: argparse.Namespace) -> tuple[BpfObject, str]:
    """Open the object and pick the program (by name or section)."""
    obj = BpfObject.open(args.object)
    if args.prog:
        return obj, obj.find_program(args.prog).name
    if len(obj.programs) > 1:
        names = ", ".join(f"{p.name} ({p.section})" for p in obj.programs)
        raise UsageError(f"{args.object} has several programs; pick one with --prog: {names}")
    return obj, obj.programs[0].name


def check_function_name(location: str, obj: BpfObject) -> None:
    """Before the guest boots: a LOC (``func``, ``func:N``) naming a function the
    object does not have."""
    found = re.fullmatch(r"([A-Za-z_]\w*)(?::[-+]?\w+)?", location.strip())
    functions = [f.name for f in obj.functions]
    if found and found.group(1) not in functions:
        raise UsageError(f"no function '{found.group(1)}' in {obj.path.name}; functions: "
                         f"{', '.join(functions)}")


def check_inputs(source: ProgramSource, packets: list[tuple[str, bytes]],
                 entries: list[MapEntry]) -> None:
    """Before the guest boots: packets BPF_PROG_TEST_RUN refuses for the program's type
    (as the section name or --prog-type gives it), map entries that do not fit the
    object's BTF types."""
    if not isinstance(source, FromObject):
        return
    check_map_entries(source.obj, entries)
    prog_type = source.options.prog_type if source.options else None
    if prog_type is None:
        prog_type = section_prog_type(source.obj.find_program(source.name).section)
    for arg, data in packets:
        problem = packet_size_problem(prog_type, len(data)) if prog_type is not None else None
        if problem:
            shown = (arg if len(arg) <= 40 else f"{arg[:37]}...") if arg.isprintable() \
                else repr(arg[:40])
            shown = shown or "''"
            raise UsageError(f"--packet {shown}: {problem}")


def check_map_entries(obj: BpfObject, entries: list[MapEntry]) -> None:
    """Encode each entry of a map the object declares with BTF types, as after load."""
    maps = {m.name: m for m in obj.maps if m.key_type_id and m.value_type_id}
    for entry in entries:
        found = maps.get(entry.map_name)
        if found is not None:
            info = MapInfo(found.name, 0, found.map_type, found.key_size, found.value_size,
                           found.max_entries, found.key_type_id or 0, found.value_type_id or 0)
            encode_entry(entry, info, obj.btf)


def program_source(args: argparse.Namespace, rest: list[str] | None = None) -> ProgramSource:
    """What PROG names; a selector's value comes from VALUE or the front of ``rest``."""
    kind = str(args.object)
    if kind not in SELECTORS:
        obj, name = open_object(args)
        return FromObject(obj, name, load_options(args))
    value = getattr(args, "selector_value", None)
    if value is None and rest:
        value = rest.pop(0)
    if value is None:
        raise UsageError(f"'{kind}' needs a value: {args.command} {kind} VALUE ...")
    return InGuest(kind, value)


@dataclass
class Setup:
    """What runs in the guest before the program is opened."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    entries: list[MapEntry] = field(default_factory=list)


def read_setup(args: argparse.Namespace) -> Setup:
    """Read every local input (files, map entries) before the guest boots."""
    return Setup([guest_file(f) for f in args.guest_file], list(args.guest_cmd),
                 map_entries(args))


def map_entries(args: argparse.Namespace) -> list[MapEntry]:
    """The entries of --maps FILE and --map NAME KEY=VALUE, in that order."""
    entries = read_map_file(args.maps) if getattr(args, "maps", None) else []
    return entries + [MapEntry(n, t, f"--map {n}") for n, t in getattr(args, "map", [])]


def guest_file(spec: str) -> tuple[str, bytes]:
    """``LOCAL:/guest/path`` → (guest path, the local file's bytes)."""
    local, sep, guest = spec.rpartition(":")
    if not sep or not local or not guest.startswith("/"):
        raise UsageError(f"--guest-file {spec}: expected LOCAL:/absolute/guest/path")
    path = Path(local)
    if not path.is_file():
        raise UsageError(f"--guest-file: {local} does not exist")
    return guest, path.read_bytes()


def open_in_session(session: Session, source: ProgramSource, setup: Setup,
                    quiet: bool = False) -> LoadedProgram:
    """Copy files, run guest commands, open the program, fill its maps."""
    prog = open_program(session, source, setup, quiet)
    fill_maps(session, prog, setup.entries)
    return prog


@contextmanager
def program_in_session(session: Session, source: ProgramSource, setup: Setup,
                       quiet: bool = False) -> Iterator[LoadedProgram]:
    """``open_in_session``, the program unloaded again when the block ends (unless the
    guest failed), so a session that lives on (``qstep mcp``) starts each command from
    fresh maps."""
    prog = open_program(session, source, setup, quiet)
    try:
        fill_maps(session, prog, setup.entries)
        yield prog
    except Exception as err:
        if not isinstance(err, MachineError):
            session.unload(prog)
        raise
    session.unload(prog)


def open_program(session: Session, source: ProgramSource, setup: Setup,
                 quiet: bool) -> LoadedProgram:
    """Copy files, run guest commands, open the program (its maps as they are)."""
    for guest_path, data in setup.files:
        session.put_file(guest_path, data)
    for command in setup.commands:
        status, output = session.guest_command(command)
        if status != 0:
            for line in output.rstrip().splitlines():
                print(f"guest: {line}", file=sys.stderr)
            raise UsageError(f"--guest-cmd {command!r} failed with status {status}"
                             + (" (its output is above)" if output.strip() else ""))
        if output.strip() and not quiet:
            print(f"guest: {output.rstrip()}")
    prog = session.open_program(source)
    if prog.foreign and not quiet:
        exact = sum(1 for s in prog.sites.values() if s.exact)
        print(f"note: {prog.name} (id {prog.prog_id}) was loaded outside qstep: JIT "
              f"addresses are known only at its own line-info records ({exact} of "
              f"{len(prog.sites)} instructions)", file=sys.stderr)
    return prog


def fill_maps(session: Session, prog: LoadedProgram, entries: list[MapEntry]) -> None:
    """Write the entries (typed through the program's BTF) into its maps."""
    for entry in entries:
        info = prog.maps.get(entry.map_name)
        if info is None:
            raise UsageError(f"{entry.origin}: unknown map '{entry.map_name}'; maps: "
                             f"{', '.join(sorted(prog.maps))}")
        key, value = encode_entry(entry, info, prog.btf)
        session.update_map(prog, entry.map_name, key, value)

from pathlib import Path

from qstep.vm.qemu_cmd import (
    VmConfig,
    agent_args,
    boot_args,
    machine_args,
    printable,
    qemu_argv,
    window_args,
)


def config(**kw: object) -> VmConfig:
    base = dict(kernel=Path("/k/bzImage"), initrd=Path("/k/initrd"), workdir=Path("/w"))
    base.update(kw)
    return VmConfig(**base)  # type: ignore[arg-type]


def test_tcg_is_default_with_the_qemu64_cpu() -> None:
    args = machine_args(config())
    assert args[args.index("-accel") + 1] == "tcg"
    assert args[args.index("-cpu") + 1] == "qemu64"
    args = machine_args(config(tcg_cpu="qemu64,-cx16"))
    assert args[args.index("-cpu") + 1] == "qemu64,-cx16"


def test_firmware_dirs_become_L_options() -> None:
    argv = qemu_argv(config(data_dirs=(Path("/p/qemu"), Path("/p/seabios"))))
    i = argv.index("-L")
    assert argv[i:i + 4] == ["-L", "/p/qemu", "-L", "/p/seabios"]
    assert "-L" not in qemu_argv(config())


def test_kvm_uses_host_cpu() -> None:
    args = machine_args(config(accel="kvm"))
    assert args[args.index("-accel") + 1] == "kvm"
    assert args[args.index("-cpu") + 1] == "host"


def test_boot_args_append_has_console_nokaslr_and_extra() -> None:
    args = boot_args(config(append_extra=("foo=1",)))
    append = args[args.index("-append") + 1].split()
    assert "console=ttyS0" in append and "nokaslr" in append and append[-1] == "foo=1"
    assert args[args.index("-kernel") + 1] == "/k/bzImage"


def test_agent_socket_waits_for_host_and_lives_in_workdir() -> None:
    args = agent_args(config())
    assert "path=/w/agent.sock" in args[1] and "wait=on" in args[1]


def test_full_argv_has_each_socket_once_and_no_tcp() -> None:
    argv = qemu_argv(config())
    text = " ".join(argv)
    for sock in ("agent.sock", "qmp.sock", "gdb.sock"):
        assert text.count(sock) == 1
    assert "tcp" not in text and "-gdb" in argv


def test_printable_quotes_the_append_string() -> None:
    assert "'console=ttyS0 " in printable(qemu_argv(config()))


def test_the_agent_window_is_an_ivshmem_device_backed_by_the_file() -> None:
    args = window_args(config(window=Path("/shm/w/window"), window_bytes=1 << 26))
    assert args == ["-object", "memory-backend-file,id=window0,share=on,"
                    "mem-path=/shm/w/window,size=67108864",
                    "-device", "ivshmem-plain,memdev=window0,master=on"]
    assert window_args(config()) == []
    assert "ivshmem-plain,memdev=window0,master=on" in qemu_argv(config(window=Path("/w/window")))


def test_incoming_waits_for_a_saved_guest_only_when_asked() -> None:
    assert "-incoming" not in qemu_argv(config())
    assert qemu_argv(config(incoming=True))[-2:] == ["-incoming", "defer"]

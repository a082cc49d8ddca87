"""``qstep dap`` on a real VM: a whole session driven by VS Code's debug-adapter test
client (Node + mocha, tests/vm/dap/session.test.js), and a client that goes away
mid-run (the guest must not outlive it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qstep.dap.codec import encode_message, read_message
from qstep.paths import cache_dir

pytestmark = pytest.mark.vm
HERE = Path(__file__).parent
EXAMPLE = HERE.parent.parent / "examples" / "l4lb"
PACKETS = [str(EXAMPLE / "packets" / f"{n}.hex")
           for n in ("ipv4_to_v4real", "ipv6_to_v6real", "ipv4_novip")]
QSTEP = str(Path(sys.executable).parent / "qstep")


def _node_modules() -> Path:
    modules = cache_dir() / "node" / "node_modules"
    if not (modules / ".bin" / "mocha").exists():
        pytest.fail("Node tools are missing: run 'make deps' (scripts/install-deps.sh)")
    return modules


@pytest.mark.parametrize("script", ["session.test.js", "probes.test.js", "state.test.js",
                                    "reverse.test.js"])
def test_vscode_client_session(l4lb_obj: Path, script: str) -> None:
    modules = _node_modules()
    env = dict(os.environ, NODE_PATH=str(modules), QSTEP_DAP_TEST=json.dumps({
        "qstep": QSTEP, "object": str(l4lb_obj), "packets": PACKETS,
        "maps": str(EXAMPLE / "maps.txt"), "source": str((EXAMPLE / "l4lb.bpf.c").resolve())}))
    proc = subprocess.run([str(modules / ".bin" / "mocha"), "--reporter", "dot",
                           str(HERE / "dap" / script)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passing" in proc.stdout


def _send(proc: subprocess.Popen[bytes], seq: int, command: str, **args: object) -> None:
    assert proc.stdin is not None
    proc.stdin.write(encode_message({"seq": seq, "type": "request", "command": command,
                                     "arguments": args}))
    proc.stdin.flush()


def _until(proc: subprocess.Popen[bytes], kind: str, name: str) -> dict[str, object]:
    assert proc.stdout is not None
    while True:
        message = read_message(proc.stdout)  # type: ignore[arg-type]
        assert message is not None, f"the adapter closed before {name}"
        if message["type"] == kind and name in (message.get("event"), message.get("command")):
            return message


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_client_gone_mid_run_stops_the_vm(l4lb_obj: Path) -> None:
    proc = subprocess.Popen([QSTEP, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _send(proc, 1, "initialize", adapterID="qstep")
        _send(proc, 2, "launch", program=str(l4lb_obj), packets=PACKETS[:1],
              maps=str(EXAMPLE / "maps.txt"))
        assert _until(proc, "response", "launch")["success"] is True
        _send(proc, 3, "setBreakpoints", source={"path": str(EXAMPLE / "l4lb.bpf.c")},
              breakpoints=[{"line": 144}])
        _send(proc, 4, "configurationDone")
        assert _until(proc, "event", "stopped")["body"]["reason"] == "breakpoint"  # type: ignore[index]
        qemu = _children(proc.pid)
        assert qemu, "no QEMU child while stopped at a breakpoint"
        assert proc.stdin is not None
        proc.stdin.close()  # the editor goes away with the program stopped mid-run
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert [pid for pid in qemu if Path(f"/proc/{pid}").exists()] == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_verifier_rejection_is_an_exception_at_its_line() -> None:
    """A C source (compiled by the adapter) that the verifier rejects: launch succeeds,
    the rejection is reported as an exception stop at the offending source line."""
    source = HERE.parent / "progs" / "reject.bpf.c"
    proc = subprocess.Popen([QSTEP, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _send(proc, 1, "initialize", adapterID="qstep")
        _send(proc, 2, "launch", program=str(source), packets=["00" * 64])
        assert _until(proc, "response", "launch")["success"] is True
        _send(proc, 3, "configurationDone")
        stop = _until(proc, "event", "stopped")["body"]
        assert stop["reason"] == "exception"  # type: ignore[index]
        assert stop["description"].startswith(  # type: ignore[index]
            "the verifier rejected reject_main: ")
        _send(proc, 4, "exceptionInfo", threadId=1)
        info = _until(proc, "response", "exceptionInfo")["body"]
        assert info["exceptionId"] == "VerifierError"  # type: ignore[index]
        assert "R1 offset is outside of the packet" in info["details"]["message"]  # type: ignore[index]
        _send(proc, 5, "stackTrace", threadId=1)
        frame = _until(proc, "response", "stackTrace")["body"]["stackFrames"][0]  # type: ignore[index]
        assert (frame["line"], Path(frame["source"]["path"]).name) == (29, "reject.bpf.c")
        _send(proc, 6, "disconnect")
        assert _until(proc, "response", "disconnect")["success"] is True
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

"""``qstep mcp`` driven by the MCP SDK's own client over stdio: the tool list, then
run, inspect and trace on the l4lb example with exact results, all on one guest that
the server boots once (a bad call in between leaves it usable), a stepping session on
it, a guest killed under the server and booted again, and nothing left running after
the client disconnects or the server gets SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from qstep.paths import REPO_ROOT
from qstep.vm.machine import process_exists

pytestmark = pytest.mark.vm
EXAMPLE = Path(__file__).parents[2] / "examples" / "l4lb"
PKT = str(EXAMPLE / "packets" / "ipv4_to_v4real.hex")
NOVIP = str(EXAMPLE / "packets" / "ipv4_novip.hex")
MAPS = str(EXAMPLE / "maps.txt")
SERVER = StdioServerParameters(command=str(Path(sys.executable).parent / "qstep"),
                               args=["mcp"])


class Client:
    """Tool calls that record progress messages; errors returned, not raised."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.progress: list[str | None] = []

    async def on_progress(self, progress: float, total: float | None,
                          message: str | None) -> None:
        if not (message or "").startswith("still running"):  # a long call's heartbeat
            self.progress.append(message)

    async def call(self, name: str, **args: Any) -> Any:
        result = await self.session.call_tool(name, args, progress_callback=self.on_progress)
        assert not result.is_error, result.content
        return result.structured_content

    async def error(self, name: str, **args: Any) -> str:
        result = await self.session.call_tool(name, args)
        assert result.is_error
        return "".join(getattr(c, "text", "") for c in result.content)


def validator(command: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO_ROOT / "docs" / "schemas" / f"{command}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def leftovers(server_pid: int) -> list[str]:
    """The server's private directories still on disk (QEMU's, the shared window's)."""
    return [p.name for base in (Path(tempfile.gettempdir()), Path("/dev/shm"))
            if base.is_dir() for p in base.iterdir()
            if p.name.startswith((f"qstep-vm-{server_pid}.", f"qstep-window-{server_pid}."))]


def dead(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return not process_exists(pid)


def wait_gone(pid: int, timeout: float = 10.0, zombie_ok: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while not dead(pid) if zombie_ok else process_exists(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def _session(obj: str) -> dict[str, Any]:
    got: dict[str, Any] = {}
    async with stdio_client(SERVER) as (read, write), ClientSession(read, write) as session:
        client = Client(session)
        await session.initialize()
        got["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        start = time.monotonic()
        got["run"] = await client.call("run", object=obj, packets=[PKT, NOVIP], maps=MAPS)
        got["first_s"] = time.monotonic() - start
        got["first_progress"] = list(client.progress)
        got["bad"] = await client.error("run", object=obj, packets=[PKT],
                                        map_entries=["no_such_map 1=2"])
        got["bad_inspect"] = await client.error("inspect", object=obj, packets=[PKT],
                                                specs=["l4lb.bpf.c:171 print nosuchvar"])
        start = time.monotonic()
        got["run2"] = await client.call("run", object=obj, packets=[PKT, NOVIP],
                                        maps=MAPS)
        got["second_s"] = time.monotonic() - start
        got["inspect"] = await client.call("inspect", object=obj, packets=[PKT], maps=MAPS,
                                           specs=["l4lb.bpf.c:171 print vip_num, slot"])
        got["stopping"] = await client.call("inspect", object=obj, packets=[PKT], maps=MAPS,
                                            specs=["l4lb.bpf.c:171 print vip_num, stop"])
        got["trace"] = await client.call("trace", object=obj, packet=NOVIP, maps=MAPS)
        got["disasm"] = await client.call("disasm", object=obj)
        got["start"] = await client.call("debug_start", object=obj, packet=PKT, maps=MAPS)
        got["held"] = await client.error("run", object=obj, packets=[PKT], maps=MAPS)
        got["break"] = await client.call("debug_command", command="break l4lb.bpf.c:144")
        got["cont"] = await client.call("debug_command", command="continue")
        got["print"] = await client.call("debug_command", command="print *vip")
        got["bt"] = await client.call("debug_command", command="backtrace")
        got["stop"] = await client.call("debug_stop")
        got["status"] = await client.call("status")
        # The guest dies under a stepping session: that session's next command fails,
        # the next call boots another guest and says so.
        await client.call("debug_start", object=obj, packet=PKT, maps=MAPS)
        qemu = got["status"]["guests"][0]["qemu_pid"]
        os.kill(qemu, signal.SIGKILL)
        assert wait_gone(qemu, zombie_ok=True)
        got["dead_next"] = await client.error("debug_command", command="next")
        got["dead_stop"] = await client.call("debug_stop")
        client.progress.clear()
        got["run3"] = await client.call("run", object=obj, packets=[PKT], maps=MAPS)
        got["reboot_progress"] = list(client.progress)
        got["status2"] = await client.call("status")
        # The client leaves while a stepping session holds the guest stopped in the program.
        got["start2"] = await client.call("debug_start", object=obj, packet=PKT, maps=MAPS)
    return got


def test_mcp_client_session(l4lb_obj: Path) -> None:
    got = anyio.run(_session, str(l4lb_obj))
    assert got["tools"] == ["debug_command", "debug_start", "debug_stop", "disasm", "inspect",
                            "run", "status", "trace"]
    runs = got["run"]["runs"]
    assert [(r["retval"], r["retval_name"]) for r in runs] == [(7, "TC_ACT_REDIRECT"),
                                                              (0, "TC_ACT_OK")]
    stats = {e["key"]: e["value"] for e in got["run"]["maps"]["stats"]}
    assert stats["1"] == "{packets: 1, bytes: 72}"
    # The same call again on the kept guest: the same answer (fresh maps: still 1 packet).
    assert got["run2"]["maps"] == got["run"]["maps"]
    assert [r["packet_out"] for r in got["run2"]["runs"]] == [r["packet_out"] for r in runs]
    assert got["bad"] == ("Error executing tool run: --map no_such_map: unknown map "
                          "'no_such_map'; maps: ch_rings, ctl_array, drops, reals, stats, "
                          "vip_map")
    assert "\n" not in got["bad_inspect"] and "nosuchvar" in got["bad_inspect"]
    # Each result is what `qstep CMD --json` prints: its schema in docs/schemas.
    for command, docs in [("run", [got["run"], got["run2"], got["run3"]]),
                          ("disasm", [got["disasm"]]),
                          ("inspect", got["inspect"]["records"] + got["stopping"]["records"]),
                          ("trace", got["trace"]["records"])]:
        for doc in docs:
            validator(command).validate(doc)
    hit, summary = got["inspect"]["records"]
    assert [v["text"] for v in hit["values"]] == ["vip_num = 1", "slot = 6"]  # expected.json
    assert (summary["summary"][0]["reached"], summary["retvals"]) == (1, [7])
    # A 'stop' probe: the stop's record (the program goes on: no debugger commands).
    stop, hit, summary = got["stopping"]["records"]
    assert (stop["stop"], stop["insn"], stop["now"]["event"]) == (1, 189, "stopped")
    assert [v["text"] for v in hit["values"]] == ["vip_num = 1"]
    assert summary["retvals"] == [7]
    trace = got["trace"]["records"]
    # The packet for no VIP: process_packet's lookup misses and returns TC_ACT_OK (line 142).
    assert trace[-1] == {"step": len(trace), "insn": 74, "function": "l4lb_ingress",
                         "offset": 74, "file": "l4lb.bpf.c", "line": 235, "retval": 0}
    lines = [(r["function"], r["line"]) for r in trace]
    assert ("process_packet", 142) in lines and ("process_packet", 144) not in lines
    assert (got["start"]["event"], got["start"]["where"]["line"]) == ("stopped", 190)
    assert got["held"] == ("Error executing tool run: the default guest is held by the "
                           "stepping session; end it first (debug_stop)")
    assert got["cont"]["data"]["where"]["line"] == 144
    assert got["print"]["text"] == "{flags = 0, vip_num = 1}"
    assert [f["function"] for f in got["bt"]["data"]["frames"]] == ["process_packet",
                                                                    "l4lb_ingress"]
    assert got["stop"] == {"stopped": True}
    # One guest for all of the above, booted by the first call.
    status = got["status"]
    assert status["boots"] == 1 and len(status["guests"]) == 1
    assert (status["guests"][0]["calls"], status["guests"][0]["held_by"]) == (9, None)
    assert got["first_progress"] == ["booting the guest (kernel default)",
                                     "running on the guest (kernel default)", "done"]
    assert got["disasm"]["kernel"] == status["guests"][0]["release"]
    functions = [f["function"]["name"] for f in got["disasm"]["functions"]]
    assert functions[0] == "l4lb_ingress" and "process_packet" in functions
    print(f"\nmcp: first run call {got['first_s']:.2f} s (boot), second "
          f"{got['second_s']:.2f} s: {got['first_s'] / got['second_s']:.1f}x")
    # The killed guest was replaced, and the call said so.
    assert got["dead_next"].startswith("Error executing tool debug_command: "), got["dead_next"]
    assert "\n" not in got["dead_next"]
    assert got["dead_stop"] == {"stopped": False}  # the failed command ended it
    assert [r["retval"] for r in got["run3"]["runs"]] == [7]
    died = [m for m in got["reboot_progress"] if m and "guest died" in m]
    assert died == ["the default guest died (QEMU exited (status -9)); booting a new one"]
    assert got["reboot_progress"] == [died[0], "booting the guest (kernel default)",
                                      "running on the guest (kernel default)", "done"]
    assert got["status2"]["boots"] == 2
    # The client closed (a stepping session open): the server shut its guest down and
    # removed its directories.
    assert got["start2"]["where"]["line"] == 190
    server_pid = got["status2"]["server_pid"]
    assert wait_gone(server_pid)
    assert not process_exists(got["status2"]["guests"][0]["qemu_pid"])
    assert leftovers(server_pid) == []


async def _terminated(obj: str) -> dict[str, Any]:
    async with stdio_client(SERVER) as (read, write), ClientSession(read, write) as session:
        client = Client(session)
        await session.initialize()
        got: dict[str, Any] = {"run": await client.call("run", object=obj, packets=[PKT],
                                                        maps=MAPS)}
        got["start"] = await client.call("debug_start", object=obj, packet=PKT, maps=MAPS)
        got["status"] = await client.call("status")  # the guest stopped in the program
        os.kill(got["status"]["server_pid"], signal.SIGTERM)
        got["server_gone"] = await anyio.to_thread.run_sync(wait_gone,
                                                            got["status"]["server_pid"])
    return got


def test_mcp_sigterm_leaves_nothing(l4lb_obj: Path) -> None:
    got = anyio.run(_terminated, str(l4lb_obj))
    assert [r["retval"] for r in got["run"]["runs"]] == [7]
    assert got["status"]["guests"][0]["held_by"] == "the stepping session"
    assert got["server_gone"]
    guest = got["status"]["guests"][0]
    assert not process_exists(guest["qemu_pid"])
    assert leftovers(got["status"]["server_pid"]) == []


async def _left_mid_call(obj: str) -> dict[str, Any]:
    got: dict[str, Any] = {}
    async with stdio_client(SERVER) as (read, write), ClientSession(read, write) as session:
        client = Client(session)
        await session.initialize()
        got["run"] = await client.call("run", object=obj, packets=[PKT], maps=MAPS)
        got["status"] = await client.call("status")
        running = anyio.Event()

        async def on_progress(progress: float, total: float | None,
                              message: str | None) -> None:
            got.setdefault("progress", []).append(message)
            if message and message.startswith("still running"):
                running.set()

        async def long_call() -> None:  # 20 s or more of probe hits: still running at the exit
            got["long"] = await session.call_tool(
                "inspect", {"object": obj, "packets": [PKT], "maps": MAPS, "repeat": 200000,
                            "specs": ["l4lb.bpf.c:171 print vip_num"]},
                progress_callback=on_progress)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(long_call)
            await running.wait()
            got["busy"] = await client.call("status")  # answered while the call runs
            tasks.cancel_scope.cancel()
        got["left_at"] = time.monotonic()
    got["closed_s"] = time.monotonic() - got["left_at"]
    return got


def test_mcp_client_leaves_mid_call(l4lb_obj: Path) -> None:
    got = anyio.run(_left_mid_call, str(l4lb_obj))
    assert "long" not in got  # the call was still running when the client left
    assert got["busy"]["guests"][0]["held_by"] == "a call"
    assert got["progress"][0] == "running on the guest (kernel default)"
    assert got["progress"][1].startswith("still running (")
    server_pid = got["status"]["server_pid"]
    assert wait_gone(server_pid)
    assert not process_exists(got["status"]["guests"][0]["qemu_pid"])
    assert leftovers(server_pid) == []
    print(f"\nmcp: client left mid-call; its stdio_client returned {got['closed_s']:.2f} s later")

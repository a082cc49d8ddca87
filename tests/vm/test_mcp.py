"""``qstep mcp`` driven by the MCP SDK's own client over stdio: the tool list, then
run, inspect and trace on the l4lb example with exact results, and a stepping session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

pytestmark = pytest.mark.vm
EXAMPLE = Path(__file__).parents[2] / "examples" / "l4lb"
PKT = str(EXAMPLE / "packets" / "ipv4_to_v4real.hex")
NOVIP = str(EXAMPLE / "packets" / "ipv4_novip.hex")
MAPS = str(EXAMPLE / "maps.txt")


async def _session(obj: str) -> dict[str, Any]:
    params = StdioServerParameters(command=str(Path(sys.executable).parent / "qstep"),
                                   args=["mcp"])
    got: dict[str, Any] = {"progress": []}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        got["tools"] = sorted(t.name for t in (await client.list_tools()).tools)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            got["progress"].append((progress, total, message))

        async def call(name: str, **args: Any) -> Any:
            result = await client.call_tool(name, args, progress_callback=progress)
            assert not result.is_error, result.content
            return result.structured_content

        got["run"] = await call("run", object=obj, packets=[PKT, NOVIP], maps=MAPS)
        got["inspect"] = await call("inspect", object=obj, packets=[PKT], maps=MAPS,
                                    specs=["l4lb.bpf.c:171 print vip_num, slot"])
        got["trace"] = await call("trace", object=obj, packet=NOVIP, maps=MAPS)
        got["start"] = await call("debug_start", object=obj, packet=PKT, maps=MAPS)
        got["break"] = await call("debug_command", command="break l4lb.bpf.c:144")
        got["cont"] = await call("debug_command", command="continue")
        got["print"] = await call("debug_command", command="print *vip")
        got["bt"] = await call("debug_command", command="backtrace")
        got["stop"] = await call("debug_stop")
    return got


def test_mcp_client_session(l4lb_obj: Path) -> None:
    got = anyio.run(_session, str(l4lb_obj))
    assert got["tools"] == ["debug_command", "debug_start", "debug_stop", "disasm", "inspect",
                            "run", "trace"]
    runs = got["run"]["runs"]
    assert [(r["retval"], r["retval_name"]) for r in runs] == [(7, "TC_ACT_REDIRECT"),
                                                              (0, "TC_ACT_OK")]
    stats = {e["key"]: e["value"] for e in got["run"]["maps"]["stats"]}
    assert stats["1"] == "{packets: 1, bytes: 72}"
    hit, summary = got["inspect"]["records"]
    assert [v["text"] for v in hit["values"]] == ["vip_num = 1", "slot = 6"]  # expected.json
    assert (summary["summary"][0]["reached"], summary["retvals"]) == (1, [7])
    trace = got["trace"]["records"]
    # The packet for no VIP: process_packet's lookup misses and returns TC_ACT_OK (line 142).
    assert trace[-1] == {"step": len(trace), "insn": 74, "function": "l4lb_ingress",
                         "offset": 74, "file": "l4lb.bpf.c", "line": 235, "retval": 0}
    lines = [(r["function"], r["line"]) for r in trace]
    assert ("process_packet", 142) in lines and ("process_packet", 144) not in lines
    assert (got["start"]["event"], got["start"]["where"]["line"]) == ("stopped", 190)
    assert got["cont"]["data"]["where"]["line"] == 144
    assert got["print"]["text"] == "{flags = 0, vip_num = 1}"
    assert [f["function"] for f in got["bt"]["data"]["frames"]] == ["process_packet",
                                                                    "l4lb_ingress"]
    assert got["stop"] == {"stopped": True}
    assert any(message == "booting the guest" for _, _, message in got["progress"])

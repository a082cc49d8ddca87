"""The one long-lived thread that owns the MCP server's guests and runs every call on them.

QEMU is started with PR_SET_PDEATHSIG, which fires when the thread that started it
exits: a thread per call would kill the guest at the call's end, so one thread
outlives all calls. A call reports progress and messages to its MCP request from
here; they are sent by the event loop and awaited before the call's result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import Context

from qstep.mcptools.guests import GuestPool, to_stderr
from qstep.mcptools.stepping import SteppingSession

T = TypeVar("T")
CLOSE_GRACE = 1.0  # seconds a running call may take before a shutdown kills the guests
HEARTBEAT = 2.0  # seconds between progress messages of a call that runs on


class Reporter:
    """A call's progress messages, from the guest thread and the heartbeat: numbered
    1, 2, 3... (the total is not known in advance)."""

    def __init__(self, ctx: Context | None, loop: asyncio.AbstractEventLoop) -> None:
        self.ctx, self.loop = ctx, loop
        self.done = 0
        self.lock = threading.Lock()
        self.sent: list[concurrent.futures.Future[None]] = []

    def progress(self, message: str) -> None:
        """One more step (``message`` says which)."""
        if self.ctx is None:
            return
        with self.lock:
            self.done += 1
            self.sent.append(asyncio.run_coroutine_threadsafe(
                self.ctx.report_progress(self.done, None, message), self.loop))

    def warn(self, message: str) -> None:
        """A message the client should see (e.g. a guest that died and was rebooted):
        a progress message (MCP's logging is deprecated), and on stderr."""
        to_stderr(message)
        self.progress(message)

    async def flush(self) -> None:
        """Wait until everything reported has been sent."""
        for fut in self.sent:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(fut)


class GuestWorker:
    """The guest thread, its guests and the stepping session."""

    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="qstep-guest")
        self.pool = GuestPool()
        self.stepping = SteppingSession(self.pool)
        self.closing = False

    async def call(self, ctx: Context | None, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the guest thread; progress goes to ``ctx``'s request,
        and every ``HEARTBEAT`` seconds while the call runs."""
        reporter = Reporter(ctx, asyncio.get_running_loop())

        def job() -> T:
            self.pool.progress, self.pool.warn = reporter.progress, reporter.warn
            try:
                result = fn(*args)
            finally:
                self.pool.progress = self.pool.warn = to_stderr
            reporter.progress("done")
            return result
        future = asyncio.wrap_future(self.executor.submit(job))
        start = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=HEARTBEAT)
                if done:
                    return future.result()
                reporter.progress(f"still running ({time.monotonic() - start:.0f} s)")
        finally:
            await reporter.flush()

    def close(self) -> None:
        """End the stepping session and shut every guest down; when the guest thread is
        busy for longer than ``CLOSE_GRACE``, kill the guests so its call ends first."""
        if self.closing:
            return
        self.closing = True
        done = self.executor.submit(self._close_all)
        try:
            done.result(CLOSE_GRACE)
        except concurrent.futures.TimeoutError:
            to_stderr(f"a call still runs after {CLOSE_GRACE} s: killing the guests")
            self.pool.kill()
            with contextlib.suppress(Exception):
                done.result(10.0)
        except Exception:  # noqa: S110 - shutting down: nothing is left to report it to
            pass
        self.executor.shutdown(wait=False)

    def _close_all(self) -> None:
        try:
            self.stepping.stop()
        finally:
            self.pool.close()

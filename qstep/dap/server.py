"""The DAP server loop: framing on a byte stream, one worker thread for the session.

The reader (the calling thread) parses messages and queues requests; the worker
runs them in order against the ``Adapter`` (the session is not thread-safe) and
writes responses and events. When the client goes away (``disconnect`` or the
end of the stream), the guest is shut down even if a run is in progress.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
from typing import Any, BinaryIO

from qstep.dap.adapter import Adapter
from qstep.dap.codec import ProtocolError, encode_message, read_message
from qstep.errors import QstepError

_STOP = {"command": "__stop__"}


class Server:
    """One DAP session over a pair of byte streams."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 0
        self.lock = threading.Lock()
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.adapter = Adapter(self.event)
        self.done = threading.Event()

    def write(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.seq += 1
            try:
                self.writer.write(encode_message({"seq": self.seq, **message}))
                self.writer.flush()
            except (OSError, ValueError):
                self.done.set()  # the client is gone

    def event(self, name: str, body: dict[str, Any]) -> None:
        self.write({"type": "event", "event": name, "body": body})

    def respond(self, request: dict[str, Any], body: dict[str, Any] | None,
                error: str | None = None) -> None:
        message: dict[str, Any] = {"type": "response", "request_seq": request.get("seq", 0),
                                   "command": request.get("command", ""),
                                   "success": error is None}
        if error is None:
            message["body"] = body or {}
        else:
            message["message"] = error
            message["body"] = {"error": {"id": 1, "format": error, "showUser": True}}
        self.write(message)

    def serve(self) -> None:
        """Serve until the client disconnects or goes away; then stop the session."""
        worker = threading.Thread(target=self._work, name="qstep-dap", daemon=True)
        reader = threading.Thread(target=self._read, name="qstep-dap-read", daemon=True)
        worker.start()
        reader.start()
        self.done.wait()
        self.requests.put(_STOP)
        worker.join(timeout=30)
        if worker.is_alive():  # stuck in a run: stop the guest under it
            self._kill_guest()
            worker.join(timeout=30)

    def _read(self) -> None:
        try:
            while True:
                message = read_message(self.reader)
                if message is None:
                    return
                if message.get("type") == "request":
                    self.requests.put(message)
        except (ProtocolError, OSError, ValueError) as err:
            self.event("output", {"category": "stderr", "output": f"qstep: {err}\n"})
        finally:
            self.done.set()

    def _kill_guest(self) -> None:
        session = self.adapter.session
        if session is not None and session.machine is not None:
            session.machine.shutdown()

    def _work(self) -> None:
        while True:
            request = self.requests.get()
            if request is _STOP:
                # Here, not in another thread: QEMU dies with the thread that started it.
                self.adapter.close()
                return
            self._run(request)
            if request.get("command") == "disconnect":
                self.done.set()

    def _run(self, request: dict[str, Any]) -> None:
        command = str(request.get("command", ""))
        try:
            body, after = self.adapter.handle(command, request.get("arguments") or {})
        except QstepError as err:
            self.respond(request, None, str(err))
            return
        except Exception as err:  # a bug: report it to the client, keep serving
            self.respond(request, None, f"internal error in {command}: {err!r}")
            return
        self.respond(request, body)
        if after is not None:
            try:
                after()
            except Exception as err:  # QstepError, or a bug: say it, end the session
                text = str(err) if isinstance(err, QstepError) else f"internal error: {err!r}"
                self.event("output", {"category": "stderr", "output": f"qstep: {text}\n"})
                self.adapter.close()
                self.event("terminated", {})


def serve_stdio() -> None:
    """Serve one session on stdin/stdout (what editors start).

    The protocol gets a private copy of stdout; file descriptor 1 then points at
    stderr, so nothing else printed can corrupt the message stream.
    """
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with protocol:
        Server(sys.stdin.buffer, protocol).serve()


def serve_port(port: int, announce: Any = print) -> None:
    """Serve one session on a loopback TCP port (0: the OS picks; the port is announced)."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        announce(f"qstep dap listening on 127.0.0.1:{listener.getsockname()[1]}")
        conn, _ = listener.accept()
    with conn, conn.makefile("rb") as reader, conn.makefile("wb") as writer:
        Server(reader, writer).serve()

"""Where a command's output lines go: printed (the command line) or kept (``qstep mcp``)."""

from __future__ import annotations

import json
from typing import Any


class Lines:
    """JSON objects and text lines of a command's output, in order.

    Printed as they come by default; with ``keep`` the JSON objects are kept in
    ``kept`` instead (and text dropped), for a caller that returns them.
    """

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.kept: list[dict[str, Any]] = []

    def data(self, obj: dict[str, Any]) -> None:
        """One JSON line."""
        if self.keep:
            self.kept.append(obj)
        else:
            print(json.dumps(obj))

    def text(self, line: str) -> None:
        """One (or more) lines of text."""
        if not self.keep:
            print(line)


PRINTED = Lines()

"""Source text for listings: the file on disk, else the lines BTF carries."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from qstep.loaded import LoadedProgram


@cache
def _file_lines(path: str) -> tuple[str, ...] | None:
    try:
        return tuple(Path(path).read_text(errors="replace").splitlines())
    except OSError:
        return None


def source_lines(prog: LoadedProgram, file: str) -> dict[int, str]:
    """Line number → text for ``file``, from disk when readable."""
    lines = _file_lines(file)
    if lines is not None:
        return {n: text for n, text in enumerate(lines, start=1)}
    return {s.source.line: s.source.text for s in prog.sites.values()
            if s.source and s.source.file == file}

"""Line numbers of keys in a TOML file, for error messages (tomllib keeps none).

Covers the TOML that scenario files use: ``[table]`` and ``[[array]]`` headers,
``key = value`` lines (dotted and quoted keys), values on one line or spanning
lines inside brackets or triple quotes. A key that cannot be placed maps to the
line of its table's header, so an error always points somewhere useful.
"""

from __future__ import annotations

import re
from collections import Counter

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
                  r'(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def key_lines(text: str) -> dict[Path, int]:
    """Every table path and key path → its 1-based line."""
    lines: dict[Path, int] = {}
    arrays: Counter[tuple[str, ...]] = Counter()
    table: Path = ()
    depth = 0  # open brackets of a multi-line value
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string or depth:
            in_string ^= line.count('"""') % 2 == 1
            depth = max(0, depth + _bracket_balance(line))
            continue
        header = _HEADER.match(line)
        if header:
            table = _table_path(header.group(1) == "[[", _split_key(header.group(2)), arrays)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(table + _split_key(key.group(1)), number)
            rest = line[key.end():]
            in_string = rest.count('"""') % 2 == 1
            depth = max(0, _bracket_balance(rest))
    return lines


def _table_path(is_array: bool, names: tuple[str, ...], arrays: Counter[tuple[str, ...]]
                ) -> Path:
    if not is_array:
        return _with_indexes(names, arrays)
    arrays[names] += 1
    return _with_indexes(names[:-1], arrays) + (names[-1], arrays[names] - 1)


def _with_indexes(names: tuple[str, ...], arrays: Counter[tuple[str, ...]]) -> Path:
    """A table path with the current index of every array of tables it passes."""
    path: list[str | int] = []
    for i, name in enumerate(names):
        path.append(name)
        if arrays[names[:i + 1]]:
            path.append(arrays[names[:i + 1]] - 1)
    return tuple(path)


def _bracket_balance(text: str) -> int:
    code = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#.*$', "", text)
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of ``path``, else of its nearest enclosing table, else 1."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1

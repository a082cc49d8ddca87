import subprocess
from pathlib import Path

from conftest import require_tool

from qstep.images import cpio


def test_newc_archive_round_trips_through_cpio(tmp_path: Path) -> None:
    require_tool("cpio")
    archive = cpio.write_newc([
        cpio.directory("bin"),
        cpio.regular("bin/tool", b"#!/bin/sh\necho hi\n", executable=True),
        cpio.symlink("bin/alias", "tool"),
        cpio.regular("data", b"x" * 5),
    ])
    assert len(archive) % 4 == 0
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/alias").readlink() == Path("tool")
    assert (tmp_path / "data").read_bytes() == b"xxxxx"


def test_trailer_is_last() -> None:
    archive = cpio.write_newc([cpio.regular("a", b"1")])
    assert b"TRAILER!!!" in archive[-128:]

"""``import qstep`` gives the API the README shows, loaded on first use."""

from __future__ import annotations

import pytest

import qstep


def test_every_exported_name_resolves() -> None:
    for name in qstep.__all__:
        assert getattr(qstep, name) is not None
    assert qstep.Session.__module__ == "qstep.session"
    assert qstep.RunRequest(b"\x00").repeat == 1


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Sesion'"):
        qstep.Sesion  # noqa: B018

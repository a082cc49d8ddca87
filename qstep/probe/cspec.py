"""Specs over C variables: conditions and print items lowered, at the probed
instruction, to registers and memory (``qstep.expr.lower``) so that the in-guest
probe and the host fallback evaluate the same untyped expressions."""

from __future__ import annotations

import dataclasses

from qstep.dwarf.types import CType
from qstep.errors import UsageError
from qstep.expr.ast import Expr
from qstep.expr.lower import LowerEnv, lower, lower_typed, needs_lowering
from qstep.probe.spec import Spec, Watch


def _lower(expr: Expr, env: LowerEnv, number: int) -> Expr:
    if not needs_lowering(expr, env):
        return expr
    try:
        return lower(expr, env)
    except UsageError as err:
        raise UsageError(f"inspect: spec {number}: {expr.to_text()}: {err}") from None


def item_types(spec: Spec, env: LowerEnv) -> tuple[CType | None, ...]:
    """The C type of each print item (None for items that are not C values)."""
    return tuple(lower_typed(item, env)[1] if needs_lowering(item, env) else None
                 for item in spec.action.prints)


def lower_spec(spec: Spec, env: LowerEnv, number: int) -> Spec:
    """The spec with its C expressions replaced by their register/memory equivalents."""
    condition = spec.condition
    if condition is not None and not isinstance(condition, Watch):
        condition = _lower(condition, env, number)
    prints = tuple(_lower(item, env, number) for item in spec.action.prints)
    action = dataclasses.replace(spec.action, prints=prints)
    return dataclasses.replace(spec, condition=condition, action=action)

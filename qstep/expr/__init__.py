"""The expression language shared by the debugger, probes and front ends.

`ast` holds the nodes, `lexer`/`parser` turn text into them, `evaluate` is the
reference semantics that compiled probes must match.
"""

from qstep.expr.ast import Expr, Value
from qstep.expr.evaluate import Env, MapEnv, evaluate, format_value
from qstep.expr.parser import SpecError, parse_expression

__all__ = ["Env", "Expr", "MapEnv", "SpecError", "Value", "evaluate", "format_value",
           "parse_expression"]

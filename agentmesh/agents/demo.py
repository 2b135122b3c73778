"""Built-in demo agents for `make run`: deterministic, no model, no network.

* `echo` answers `echo: <last user message>` (streamed word by word when asked to stream);
* `calculator` evaluates an arithmetic expression: `{"expression": "2 * (3 + 4)"}` or a message;
* `capitals` looks a country's capital up in a small table shipped with the package.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import AsyncIterator, Callable
from functools import cache
from importlib import resources
from typing import Any

from agentmesh.agents.base import AgentInfo, AgentReply, AgentRequest, RequestError
from agentmesh.agents.local import LocalAgent, LocalBackend

_TEXT_INPUT = {"type": "object", "properties": {"text": {"type": "string"}}}


async def echo(request: AgentRequest) -> AsyncIterator[str]:
    text = request.last_user_text() or str((request.arguments or {}).get("text", ""))
    words = f"echo: {text}".split(" ")
    for index, word in enumerate(words):
        yield word if index == len(words) - 1 else word + " "


def calculator(request: AgentRequest) -> AgentReply:
    expression = str((request.arguments or {}).get("expression", "")) or request.last_user_text()
    value = evaluate(expression)
    return AgentReply(f"{expression} = {value}", data={"expression": expression, "value": value})


def capitals(request: AgentRequest) -> AgentReply:
    country = (str((request.arguments or {}).get("country", "")) or request.last_user_text()).strip()
    capital = _capitals().get(country.lower().rstrip("?. "))
    if capital is None:
        return AgentReply(
            f"I do not know the capital of {country!r}.", data={"country": country, "capital": None}
        )
    return AgentReply(
        f"The capital of {country} is {capital}.", data={"country": country, "capital": capital}
    )


@cache
def _capitals() -> dict[str, str]:
    text = resources.files("agentmesh.agents").joinpath("data/capitals.json").read_text(encoding="utf-8")
    table: dict[str, str] = json.loads(text)
    return table


class ExpressionError(ValueError, RequestError):
    """An expression the calculator will not evaluate: the caller's mistake, not the agent's ill health."""


_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_MAX_EXPONENT = 1000
_MAX_LENGTH = 200


def evaluate(expression: str) -> int | float:
    """Arithmetic only: numbers, + - * / // % ** and parentheses. Raises ExpressionError otherwise."""
    if len(expression) > _MAX_LENGTH:
        raise ExpressionError(f"expression longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"not an arithmetic expression: {expression!r}") from error
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        result: int | float = _OPERATORS[type(node.op)](_eval(node.operand))
        return result
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ExpressionError(f"exponent above {_MAX_EXPONENT}")
        try:
            result = _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError as error:
            raise ExpressionError("division by zero") from error
        return result
    raise ExpressionError(f"unsupported element {type(node).__name__} in expression")


DEMO_AGENTS = {
    "echo": LocalAgent(
        AgentInfo("echo", "Repeats the last user message.", ("echo", "demo"), _TEXT_INPUT), echo
    ),
    "calculator": LocalAgent(
        AgentInfo(
            "calculator",
            "Evaluates an arithmetic expression.",
            ("math", "demo"),
            {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
        ),
        calculator,
    ),
    "capitals": LocalAgent(
        AgentInfo(
            "capitals",
            "Knows the capital cities of a few countries.",
            ("geography", "lookup", "demo"),
            {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]},
        ),
        capitals,
    ),
}


def demo_backend(*agent_ids: str) -> LocalBackend:
    """A local backend with some of the demo agents (all of them when none is named)."""
    chosen = agent_ids or tuple(DEMO_AGENTS)
    return LocalBackend("demo", [DEMO_AGENTS[agent_id] for agent_id in chosen])

"""The built-in demo agents are deterministic and the calculator evaluates arithmetic only."""

from __future__ import annotations

import pytest

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.demo import demo_backend, evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 // 2", 3), ("-2 ** 3", -8), ("1 / 4", 0.25)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os')", "unsupported"),
        ("a + 1", "unsupported"),
        ("2 ** 100000", "exponent"),
        ("1 / 0", "division by zero"),
        ("2 +", "not an arithmetic"),
        ("1" * 300, "longer than"),
        ("True + 1", "unsupported"),
    ],
)
def test_calculator_refuses_anything_else(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        evaluate(expression)


async def test_demo_backend_agents_answer() -> None:
    backend = demo_backend()
    assert [a.id for a in await backend.discover()] == ["echo", "calculator", "capitals"]
    chat = AgentRequest(messages=(ChatMessage("user", "Norway"),))
    assert (await backend.call("capitals", chat)).text == "The capital of Norway is Oslo."
    assert (await backend.call("capitals", AgentRequest(arguments={"country": "Atlantis"}))).data == {
        "country": "Atlantis",
        "capital": None,
    }
    assert (
        await backend.call("echo", AgentRequest(messages=(ChatMessage("user", "a b c"),)))
    ).text == "echo: a b c"
    assert [chunk async for chunk in backend.stream("echo", AgentRequest(arguments={"text": "x y"}))] == [
        "echo: ",
        "x ",
        "y",
    ]
    with pytest.raises(KeyError):
        await backend.call("nobody", chat)

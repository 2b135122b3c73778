"""Access control over real nodes and real MCP clients: who may call what (docs/access-control.md).

n0 (AS65001) - n1 (AS65002) - n2 (AS65003); n2 hosts the demo agents, the MCP front-end is n0's,
so every call from an MCP client crosses two hops before n2's call policy sees it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from structlog.testing import capture_logs

from agentmesh.access_config import AccessConfig, compile_call_policy
from agentmesh.agents.base import AgentRequest, CallErrorCode, CallFailure
from agentmesh.agents.demo import demo_backend
from agentmesh.mcp import McpHttpServer, build_server
from agentmesh.speaker.node import Node
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.nodes import running

pytestmark = pytest.mark.timeout(30)

OPS_TOKEN = "ops-token-0123456789abcdef"
GUEST_TOKEN = "guest-token-0123456789abcdef"
CI_KEY = "ci-api-key-0123456789abcdef"
JWT_SECRET = "the-hs256-secret-shared-with-the-idp"
DEMO = ["demo.calculator", "demo.capitals", "demo.echo"]

ACCESS = AccessConfig.model_validate(
    {
        "callers": [
            {"name": "ops", "tokens": [OPS_TOKEN]},
            {
                "name": "guest",
                "tokens": [GUEST_TOKEN],
                "allow_names": ["demo.*"],
                "deny_names": ["demo.capitals"],
            },
            {"name": "ci", "api_keys": [CI_KEY], "allow_capabilities": ["math"]},
            {"name": "alice", "allow_names": ["demo.echo"]},
        ],
        "jwt": {"hs256_secret": JWT_SECRET, "issuer": "https://idp.example", "audience": "agentmesh"},
        "stdio_caller": "guest",
    }
)


@pytest.fixture
async def chain() -> AsyncIterator[list[Node]]:
    async with running(*configs([65001, 65002, 65003])) as nodes:
        for node in nodes:
            record_asn(node)
        await link(nodes, [(0, 1), (1, 2)])
        await nodes[2].host(demo_backend(), "demo")
        await everywhere(nodes, "demo.capitals")
        yield nodes


def record_asn(node: Node, access: AccessConfig | None = None) -> None:
    """What `Node.start` does once it builds its Forwarder with `asn=` and `call_policy=`."""
    node.forwarder.asn = node.asn
    if access is not None:
        node.forwarder.call_policy = compile_call_policy(access)


@pytest.fixture
async def http(chain: list[Node]) -> AsyncIterator[McpHttpServer]:
    server = McpHttpServer(chain[0], access=ACCESS)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def connect(
    server: McpHttpServer, headers: dict[str, str], mode: str = "auto"
) -> AsyncIterator[Client]:
    """A Streamable HTTP client sending `headers` with every request."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as web,
        Client(streamable_http_client(server.url, http_client=web), mode=mode) as client,
    ):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def payload(result: CallToolResult) -> Any:
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text[text.index("{") :])


async def listed(client: Client) -> list[str]:
    return [agent["name"] for agent in payload(await client.call_tool("list_agents", {}))["agents"]]


def denials(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "call_denied"]


# -- callers at the front-end ----------------------------------------------------------------------


async def test_an_allowed_caller_calls_across_the_mesh(http: McpHttpServer, chain: list[Node]) -> None:
    async with connect(http, bearer(OPS_TOKEN)) as client:
        result = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
        assert not result.is_error
        answer = payload(result)
        assert "Paris" in answer["text"] and answer["served_by"] == "n2"
        assert answer["trace"] == [node.router_id for node in chain]


async def test_a_caller_rule_refuses_the_call_names_the_rule_and_is_audited(http: McpHttpServer) -> None:
    with capture_logs() as logs:
        async with connect(http, bearer(GUEST_TOKEN)) as client:
            allowed = await client.call_tool("call_agent", {"name": "demo.echo", "message": "hi"})
            assert not allowed.is_error
            result = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    rule = 'access.callers[guest].deny_names[0] "demo.capitals"'
    assert f"permission_denied at node n0: denied by {rule}" in text
    assert payload(result)["error"] == {
        "code": "permission_denied",
        "node": "n0",
        "reason": f"denied by {rule}",
    }
    [audit] = denials(logs)
    assert audit["caller"] == "guest" and audit["name"] == "demo.capitals"
    assert audit["rule"] == rule and audit["node"] == "n0" and audit["log_level"] == "warning"
    assert GUEST_TOKEN not in json.dumps(logs, default=str)


async def test_each_caller_lists_only_what_it_may_call(http: McpHttpServer) -> None:
    async with connect(http, bearer(OPS_TOKEN)) as ops:
        assert await listed(ops) == DEMO
    async with connect(http, bearer(GUEST_TOKEN)) as guest:
        assert await listed(guest) == ["demo.calculator", "demo.echo"]
        status = payload(await guest.call_tool("mesh_status", {}))
        assert status["node"]["name"] == "n0"
    async with connect(http, {"X-API-Key": CI_KEY}) as ci:
        assert await listed(ci) == ["demo.calculator"]


async def test_resolving_a_name_the_caller_may_not_call_is_refused_with_the_rule(http: McpHttpServer) -> None:
    async with connect(http, bearer(GUEST_TOKEN)) as client:
        resolved = payload(await client.call_tool("resolve_agent", {"name": "demo.echo"}))
        assert resolved["entry"] == "demo.echo"
        refused = await client.call_tool("resolve_agent", {"name": "demo.capitals"})
        assert refused.is_error
        assert payload(refused)["error"]["code"] == "permission_denied"
        assert "deny_names[0]" in payload(refused)["error"]["reason"]


async def test_an_api_key_caller_is_held_to_its_capabilities(http: McpHttpServer) -> None:
    async with connect(http, {"X-API-Key": CI_KEY}) as client:
        by_tag = await client.call_tool(
            "call_agent", {"capability": "math", "arguments": {"expression": "6*7"}}
        )
        assert payload(by_tag)["text"] == "6*7 = 42"
        refused = await client.call_tool("call_agent", {"name": "demo.echo", "message": "hi"})
        assert payload(refused)["error"]["reason"] == (
            "denied by access.callers[ci] (no allow_names or allow_capabilities entry matches)"
        )
        # By capability the caller is never handed an agent it may not call.
        hidden = await client.call_tool("call_agent", {"capability": "echo", "message": "hi"})
        assert hidden.is_error and payload(hidden)["error"]["code"] == "permission_denied"


async def test_missing_or_unknown_credentials_get_401_with_a_bearer_challenge(http: McpHttpServer) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    base = f"http://127.0.0.1:{http.port}"
    with capture_logs() as logs:
        async with httpx2.AsyncClient(timeout=5) as web:
            for headers in ({}, bearer("not-a-known-token-at-all"), {"X-API-Key": "not-a-known-key-at-all"}):
                response = await web.post(http.url, json=initialize, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "ops" not in response.text and "guest" not in response.text
            assert (await web.get(f"{base}/mcp/sse")).status_code == 401
            assert (await web.post(f"{base}/mcp/message?session_id=0")).status_code == 401
            assert (await web.get(f"{base}/status")).status_code == 401
            assert (await web.get(f"{base}/health")).status_code == 200  # probes need no credential
            status = await web.get(f"{base}/status", headers={"X-API-Key": CI_KEY})
            assert status.status_code == 200 and status.json()["node"]["name"] == "n0"
    refused = [entry for entry in logs if entry["event"] == "mcp_unauthenticated"]
    reasons = {entry["reason"].split(":")[0] for entry in refused}
    assert reasons == {"no credential", "not a JWT", "unknown API key"}  # unknown tokens are tried as JWTs
    assert "not-a-known-token-at-all" not in json.dumps(logs, default=str)


def token(subject: str, *, expires_in: float = 60, secret: str = JWT_SECRET) -> str:
    claims = {
        "sub": subject,
        "iss": "https://idp.example",
        "aud": "agentmesh",
        "exp": int(time.time() + expires_in),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_a_jwt_caller_gets_its_rules_and_an_expired_jwt_is_refused(http: McpHttpServer) -> None:
    async with connect(http, bearer(token("alice"))) as client:
        assert await listed(client) == ["demo.echo"]
        answer = payload(await client.call_tool("call_agent", {"name": "demo.echo", "message": "hi"}))
        assert answer["text"] == "echo: hi"
    async with httpx2.AsyncClient(timeout=5) as web:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        for refused in (
            token("alice", expires_in=-5),
            token("alice", secret="not-the-secret-the-node-knows-at-all"),
            token("mallory"),  # a valid token for a caller the node has no entry (or default) for
        ):
            response = await web.post(http.url, json=initialize, headers=bearer(refused))
            assert response.status_code == 401
            assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_rules_hold_on_both_streamable_http_protocols(http: McpHttpServer, mode: str) -> None:
    async with connect(http, bearer(GUEST_TOKEN), mode) as client:
        assert await listed(client) == ["demo.calculator", "demo.echo"]
        refused = await client.call_tool(
            "call_agent", {"name": "demo.capitals", "stream": True, "message": "x"}
        )
        assert payload(refused)["error"]["code"] == "permission_denied"


async def test_the_legacy_sse_transport_authenticates_and_applies_the_rules(http: McpHttpServer) -> None:
    async with Client(sse_client(http.sse_url, headers=bearer(GUEST_TOKEN))) as client:
        assert await listed(client) == ["demo.calculator", "demo.echo"]
        refused = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
        assert payload(refused)["error"]["code"] == "permission_denied"
        answer = payload(await client.call_tool("call_agent", {"name": "demo.echo", "message": "hi"}))
        assert answer["served_by"] == "n2"


async def test_a_session_without_credentials_gets_the_stdio_callers_rules(chain: list[Node]) -> None:
    async with Client(build_server(chain[0], access=ACCESS)) as client:
        assert await listed(client) == ["demo.calculator", "demo.echo"]
        refused = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
        assert "access.callers[guest]" in payload(refused)["error"]["reason"]
    async with Client(build_server(chain[2], access=ACCESS)) as client:
        # The node's status shows of its own backends' agents only those the caller may call.
        [backend] = payload(await client.call_tool("mesh_status", {}))["backends"]
        assert backend["agents"] == ["demo.calculator", "demo.echo"]
    open_access = ACCESS.model_copy(update={"stdio_caller": None})
    async with Client(build_server(chain[0], access=open_access)) as client:
        assert await listed(client) == DEMO


async def test_without_access_configuration_everything_is_open(chain: list[Node]) -> None:
    server = McpHttpServer(chain[0], access=AccessConfig())
    await server.start()
    try:
        async with connect(server, {}) as client:
            assert await listed(client) == DEMO
            answer = payload(
                await client.call_tool("call_agent", {"name": "demo.capitals", "message": "Japan"})
            )
            assert "Tokyo" in answer["text"]
        async with httpx2.AsyncClient(timeout=5) as web:
            assert (await web.get(f"http://127.0.0.1:{server.port}/status")).status_code == 200
    finally:
        await server.stop()


# -- call policy at the origin ---------------------------------------------------------------------


async def test_the_origin_refuses_by_the_callers_as_though_the_front_end_allowed_it(
    http: McpHttpServer, chain: list[Node]
) -> None:
    _, n1, n2 = chain
    record_asn(
        n2,
        AccessConfig.model_validate({"call_policy": [{"names": ["demo.capitals"], "allow_ases": [65002]}]}),
    )
    with capture_logs() as logs:
        async with connect(http, bearer(OPS_TOKEN)) as client:
            result = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
            still = await client.call_tool("call_agent", {"name": "demo.echo", "message": "hi"})
    rule = "access.call_policy[0] (AS65001 not in allow_ases)"
    assert result.is_error and not still.is_error
    assert payload(result)["error"] == {
        "code": "permission_denied",
        "node": "n2",
        "reason": f"denied by {rule}",
    }
    assert f"permission_denied at node n2: denied by {rule}" in result.content[0].text  # type: ignore[union-attr]
    [audit] = denials(logs)
    assert (audit["node"], audit["caller"], audit["name"], audit["rule"]) == (
        "n2",
        "AS65001",
        "demo.capitals",
        rule,
    )
    assert audit["trace_asns"] == [65001, 65002]
    # The AS it allows gets through: a call that enters the mesh at n1.
    served = await n1.call_agent("demo.capitals", AgentRequest(arguments={"country": "France"}))
    assert served.served_by == "n2"


async def test_any_hop_refuses_a_call_that_crossed_a_listed_as(chain: list[Node]) -> None:
    n0, n1, n2 = chain
    policy = {"call_policy": [{"names": ["demo.*"], "deny_ases": [65002], "match": "any_hop"}]}
    record_asn(n2, AccessConfig.model_validate(policy))
    with pytest.raises(CallFailure) as failed:
        await n0.call_agent("demo.echo", AgentRequest(arguments={"text": "hi"}))
    assert (failed.value.code, failed.value.node) == (CallErrorCode.PERMISSION_DENIED, "n2")
    assert failed.value.reason == "denied by access.call_policy[0] (AS65002, hop 2 of the path, in deny_ases)"
    # Refused by the first AS (the caller's) too; a call that starts at n2 itself is only AS65003's.
    with pytest.raises(CallFailure):
        await n1.call_agent("demo.echo", AgentRequest(arguments={"text": "hi"}))
    assert (await n2.call_agent("demo.echo", AgentRequest(arguments={"text": "hi"}))).served_by == "n2"


async def test_a_call_whose_path_lacks_an_as_is_refused_by_a_policy_that_applies(chain: list[Node]) -> None:
    n0, n1, n2 = chain
    n1.forwarder.asn = None  # as a node from before trace_asns would: it records nothing
    record_asn(
        n2, AccessConfig.model_validate({"call_policy": [{"names": ["demo.echo"], "deny_ases": [65009]}]})
    )
    with pytest.raises(CallFailure) as failed:
        await n0.call_agent("demo.echo", AgentRequest(arguments={"text": "hi"}))
    assert failed.value.code is CallErrorCode.PERMISSION_DENIED and "unknown" in failed.value.reason
    # Names no rule applies to are not affected.
    served = await n0.call_agent("demo.capitals", AgentRequest(arguments={"country": "France"}))
    assert served.served_by == "n2"


async def test_a_session_belongs_to_the_caller_that_opened_it(http: McpHttpServer) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=5) as web:
        opened = await web.post(http.url, json=initialize, headers={**accept, **bearer(OPS_TOKEN)})
        assert opened.status_code == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        other = await web.post(http.url, json=ping, headers={**accept, **session, **bearer(GUEST_TOKEN)})
        assert other.status_code == 404  # as if the session did not exist
        own = await web.post(http.url, json=ping, headers={**accept, **session, **bearer(OPS_TOKEN)})
        assert own.status_code == 200

"""The access rules engine (agentmesh.access) and the validation of the `access` section.

Sans-IO: no nodes, no sockets; time is an argument.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from agentmesh.access import (
    AsMatch,
    Authenticator,
    AuthFailure,
    CallerRules,
    CallPolicy,
    JwtVerifier,
    NamePattern,
    PolicyRule,
)
from agentmesh.access_config import AccessConfig, compile_access, compile_call_policy
from agentmesh.config import _format_location, _problems_from_validation_error

TOKEN = "ops-token-0123456789abcdef"
API_KEY = "ops-api-key-0123456789abcdef"
HS_SECRET = "a-shared-hs256-secret-of-32-chars!!"
NOW = 1_800_000_000.0


def rules(**kwargs: Any) -> CallerRules:
    patterns = {key: tuple(NamePattern.parse(p) for p in kwargs.pop(key, ())) for key in ("allow", "deny")}
    return CallerRules(
        "ops",
        allow_names=patterns["allow"],
        deny_names=patterns["deny"],
        **{k: tuple(v) for k, v in kwargs.items()},
    )


def problems(data: dict[str, Any]) -> list[str]:
    """The problems the node's configuration loader reports for `access: <data>`, as `location: message`."""
    with pytest.raises(ValidationError) as failed:
        AccessConfig.model_validate(data)
    found = _problems_from_validation_error(failed.value)
    return [f"access.{_format_location(loc)}: {message}" for loc, message in found]


# -- name patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("billing.invoice", "billing.invoice", True),
        ("billing.invoice", "billing.invoice.pdf", False),
        ("billing.invoice", "Billing.invoice", False),  # names are compared exactly
        ("billing.*", "billing.invoice", True),  # an aggregate covers every name below it...
        ("billing.*", "billing.invoice.pdf", True),  # ...at any depth, like a route
        ("billing.*", "billing.*", True),
        ("billing.*", "billing", False),
        ("billing.*", "billingx.invoice", False),
        ("*.invoice", "billing.invoice", True),  # a glob's * stays within one label
        ("*.invoice", "acme.billing.invoice", False),
        ("**.invoice", "acme.billing.invoice", True),
        ("billing.**", "billing", True),  # ** matches no label too
        ("billing.inv?ice", "billing.invoice", True),
        ("billing.[ab]*.x", "billing.beta.x", True),
        ("billing.[ab]*.x", "billing.gamma.x", False),
    ],
)
def test_name_patterns_are_names_aggregates_or_globs(pattern: str, name: str, matches: bool) -> None:
    assert NamePattern.parse(pattern).matches(name) is matches


# -- caller rules ---------------------------------------------------------------------------------


def test_a_caller_without_rules_may_call_anything() -> None:
    verdict = rules().check("anything.at.all", ("whatever",))
    assert verdict.allowed and verdict.rule == ""


def test_deny_beats_allow_and_names_the_rule() -> None:
    caller = rules(allow=["billing.*"], deny=["billing.payroll", "billing.**.secret"])
    assert caller.check("billing.invoice").allowed
    refused = caller.check("billing.payroll")
    assert not refused.allowed
    assert refused.rule == 'access.callers[ops].deny_names[0] "billing.payroll"'
    assert refused.reason == 'denied by access.callers[ops].deny_names[0] "billing.payroll"'
    assert caller.check("billing.a.b.secret").rule == 'access.callers[ops].deny_names[1] "billing.**.secret"'


def test_with_allow_lists_a_caller_may_call_only_what_they_allow() -> None:
    caller = rules(allow=["demo.echo"], allow_capabilities=["math"])
    assert caller.check("demo.echo").rule == 'access.callers[ops].allow_names[0] "demo.echo"'
    assert caller.check("demo.calculator", ("demo", "math")).rule == (
        'access.callers[ops].allow_capabilities[0] "math"'
    )
    refused = caller.check("demo.capitals", ("geography", "demo"))
    assert not refused.allowed
    assert refused.rule == "access.callers[ops] (no allow_names or allow_capabilities entry matches)"


def test_a_denied_capability_refuses_an_agent_that_has_any_of_them() -> None:
    caller = rules(allow=["demo.*"], deny_capabilities=["payments", "admin"])
    assert caller.check("demo.echo", ("echo", "demo")).allowed
    refused = caller.check("demo.shell", ("demo", "admin"))
    assert refused.rule == 'access.callers[ops].deny_capabilities[1] "admin"'
    # Only deny lists: everything else stays open.
    assert rules(deny_capabilities=["admin"]).check("x.y", ("other",)).allowed


def test_rule_text_quotes_the_pattern_as_written() -> None:
    refused = rules(deny=["billing.**"]).check("billing.invoice")
    assert refused.reason == 'denied by access.callers[ops].deny_names[0] "billing.**"'


# -- call policy ----------------------------------------------------------------------------------


def policy(*specs: tuple[list[str], bool, set[int], AsMatch]) -> CallPolicy:
    return CallPolicy(
        tuple(
            PolicyRule(i, tuple(NamePattern.parse(p) for p in names), frozenset(ases), allow, match)
            for i, (names, allow, ases, match) in enumerate(specs)
        )
    )


def test_allow_ases_checks_the_callers_as_by_default() -> None:
    origin = policy((["billing.*"], True, {65001}, AsMatch.ORIGIN))
    assert origin.check("billing.invoice", (65001, 65002)).allowed
    refused = origin.check("billing.invoice", (65003, 65001))
    assert refused.reason == "denied by access.call_policy[0] (AS65003 not in allow_ases)"
    assert origin.check("other.agent", (65003,)).allowed  # the rule does not apply to it


def test_any_hop_checks_every_as_on_the_path() -> None:
    path = (65001, 65002, 65003)
    assert policy((["a.*"], False, {65002}, AsMatch.ORIGIN)).check("a.b", path).allowed
    refused = policy((["a.*"], False, {65002}, AsMatch.ANY_HOP)).check("a.b", path)
    assert refused.reason == "denied by access.call_policy[0] (AS65002, hop 2 of the path, in deny_ases)"
    strict = policy((["a.*"], True, {65001, 65003}, AsMatch.ANY_HOP))
    assert strict.check("a.b", (65001, 65003)).allowed
    assert (
        strict.check("a.b", path).rule
        == "access.call_policy[0] (AS65002, hop 2 of the path, not in allow_ases)"
    )


def test_every_rule_that_applies_must_allow_and_the_first_refusal_decides() -> None:
    two = policy(
        (["a.*"], True, {65001, 65002}, AsMatch.ORIGIN),
        (["a.secret"], False, {65002}, AsMatch.ORIGIN),
    )
    assert two.check("a.secret", (65001,)).allowed
    assert two.check("a.secret", (65002,)).rule == "access.call_policy[1] (AS65002 in deny_ases)"
    assert two.check("a.secret", (65009,)).rule == "access.call_policy[0] (AS65009 not in allow_ases)"


def test_an_unknown_caller_as_is_refused_by_a_rule_that_applies() -> None:
    deny_only = policy((["a.*"], False, {65002}, AsMatch.ORIGIN))
    refused = deny_only.check("a.b", ())
    assert not refused.allowed and "unknown" in refused.rule
    assert deny_only.check("z.z", ()).allowed
    assert CallPolicy().check("a.b", ()).allowed and not CallPolicy()


# -- authentication -------------------------------------------------------------------------------


def authenticator(**config: Any) -> Authenticator:
    access = compile_access(AccessConfig.model_validate(config))
    assert access.authenticator is not None
    return access.authenticator


def test_tokens_and_api_keys_name_their_caller() -> None:
    auth = authenticator(callers=[{"name": "ops", "tokens": [TOKEN], "api_keys": [API_KEY]}])
    assert auth.authenticate(TOKEN, None, NOW).name == "ops"
    assert auth.authenticate(None, API_KEY, NOW).rules.caller == "ops"
    for bearer, key, reason in [
        (None, None, "no credential"),
        ("not-a-known-token-at-all", None, "unknown bearer token"),
        (None, TOKEN, "unknown API key"),  # a token is not an API key
        ("wrong-token-but-long-enough", API_KEY, "unknown bearer token"),  # the bearer token decides
    ]:
        with pytest.raises(AuthFailure, match=reason):
            auth.authenticate(bearer, key, NOW)


def test_token_files_are_read_when_compiled(tmp_path: Path) -> None:
    secret = tmp_path / "ops.token"
    secret.write_text(f"  {TOKEN}\n")
    auth = authenticator(callers=[{"name": "ops", "token_files": [str(secret)]}])
    assert auth.authenticate(TOKEN, None, NOW).name == "ops"
    short = tmp_path / "short.token"
    short.write_text("short")
    config = AccessConfig.model_validate({"callers": [{"name": "ops", "api_key_files": [str(short)]}]})
    with pytest.raises(ValueError, match=r"access.callers\[0\].api_key_files\[0\]: .* fewer than 16"):
        compile_access(config)


def hs256(claims: dict[str, Any], secret: str = HS_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_a_jwt_names_its_caller_by_a_claim() -> None:
    auth = authenticator(
        callers=[{"name": "alice", "allow_names": ["demo.*"]}, {"name": "guests", "deny_names": ["**"]}],
        jwt={
            "hs256_secret": HS_SECRET,
            "issuer": "https://idp",
            "audience": "agentmesh",
            "default_caller": "guests",
        },
    )
    claims = {"sub": "alice", "iss": "https://idp", "aud": "agentmesh", "exp": NOW + 60}
    assert auth.authenticate(hs256(claims), None, NOW).rules.caller == "alice"
    # A subject without an entry of its own gets the default caller's rules, under its own name.
    bob = auth.authenticate(hs256({**claims, "sub": "bob"}), None, NOW)
    assert (bob.name, bob.rules.caller) == ("bob", "guests")
    for bad, reason in [
        ({**claims, "exp": NOW - 1}, "expired"),
        ({**claims, "nbf": NOW + 30}, "not valid yet"),
        ({**claims, "iss": "https://other"}, "invalid JWT"),
        ({**claims, "aud": "someone-else"}, "invalid JWT"),
        ({k: v for k, v in claims.items() if k != "exp"}, "no exp"),
        ({k: v for k, v in claims.items() if k != "sub"}, "'sub' is missing"),
    ]:
        with pytest.raises(AuthFailure, match=reason):
            auth.authenticate(hs256(bad), None, NOW)
    with pytest.raises(AuthFailure, match="invalid JWT"):
        auth.authenticate(hs256(claims, "another-secret-that-is-32-chars-long"), None, NOW)


def test_rs256_keys_are_never_used_as_hmac_secrets() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = AccessConfig.model_validate(
        {"callers": [{"name": "svc"}], "jwt": {"rs256_public_key": pem.decode(), "caller_claim": "client_id"}}
    ).jwt
    assert verifier is not None
    check: JwtVerifier = verifier.verifier()
    token = jwt.encode({"client_id": "svc", "exp": NOW + 60}, private, algorithm="RS256")
    assert check.verify(token, NOW) == "svc"
    # The public key (which anyone may know) used as an HS256 secret: the classic algorithm confusion.
    forged = jwt.encode({"client_id": "svc", "exp": NOW + 60}, "x" * 40, algorithm="HS256")
    with pytest.raises(AuthFailure, match="'HS256' is not accepted"):
        check.verify(forged, NOW)
    with pytest.raises(AuthFailure, match="not a JWT"):
        check.verify("definitely.not.ajwt", time.time())


# -- configuration --------------------------------------------------------------------------------


def test_no_access_configuration_compiles_to_open() -> None:
    for config in (None, AccessConfig()):
        access = compile_access(config)
        assert access.authenticator is None and access.stdio is None and not access.call_policy


def test_a_full_configuration_compiles() -> None:
    config = AccessConfig.model_validate(
        {
            "callers": [
                {"name": "ops", "tokens": [TOKEN], "allow_names": ["demo.*"], "deny_capabilities": ["admin"]},
                {"name": "ci", "api_keys": [API_KEY], "allow_capabilities": ["math"]},
            ],
            "stdio_caller": "ops",
            "call_policy": [
                {"names": ["demo.capitals"], "allow_ases": [65001]},
                {"names": ["demo.*"], "deny_ases": [65009], "match": "any_hop"},
            ],
        }
    )
    access = compile_access(config)
    assert access.stdio is not None and access.stdio.rules.allow_names[0].text == "demo.*"
    assert compile_call_policy(config) == access.call_policy
    second = access.call_policy.rules[1]
    assert (second.allow, second.ases, second.match) == (False, frozenset({65009}), AsMatch.ANY_HOP)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"callers": [{"name": "ops", "tokens": ["short"]}]},
            "access.callers[0].tokens[0]: must be at least 16 characters; a short secret is guessable",
        ),
        (
            {"callers": [{"name": "ops", "allow_names": ["billing..x"]}]},
            "access.callers[0].allow_names[0]: 'billing..x' is not a name, an aggregate (a.b.*) or a glob",
        ),
        (
            {"callers": [{"name": "has space"}]},
            "access.callers[0].name: a caller name has 1 to 253 characters",
        ),
        (
            {"callers": [{"name": "a"}, {"name": "a"}]},
            "access.callers[1].name: duplicate caller 'a', already callers[0]",
        ),
        (
            {"callers": [{"name": "a", "tokens": [TOKEN]}, {"name": "b", "api_keys": [TOKEN]}]},
            "access.callers[1].api_keys[0]: the same secret is already given at access.callers[0].tokens[0]",
        ),
        ({"callers": [{"name": "a", "token": TOKEN}]}, "access.callers[0].token: unknown key"),
        ({"stdio_caller": "nobody"}, "access.stdio_caller: no caller named 'nobody' in access.callers"),
        (
            {"callers": [{"name": "a"}], "jwt": {"hs256_secret": "too-short"}},
            "access.jwt.hs256_secret: must be at least 32 characters (RFC 7518 §3.2)",
        ),
        ({"callers": [{"name": "a"}], "jwt": {}}, "access.jwt: give a key to check signatures with"),
        (
            {"callers": [{"name": "a"}], "jwt": {"hs256_secret": HS_SECRET, "default_caller": "b"}},
            "access.jwt.default_caller: no caller named 'b' in access.callers",
        ),
        (
            {"callers": [{"name": "a"}], "jwt": {"rs256_public_key": "-----BEGIN PUBLIC KEY-----\nxx"}},
            "access.jwt.rs256_public_key: not a PEM public key",
        ),
        (
            {"call_policy": [{"names": ["a.*"]}]},
            "access.call_policy[0]: give allow_ases or deny_ases (exactly one)",
        ),
        (
            {"call_policy": [{"names": ["a.*"], "allow_ases": [1], "deny_ases": [2]}]},
            "access.call_policy[0].deny_ases: give allow_ases or deny_ases (exactly one)",
        ),
        (
            {"call_policy": [{"names": [], "deny_ases": [2]}]},
            "access.call_policy[0].names: list at least one",
        ),
        (
            {"call_policy": [{"names": ["a.*"], "allow_ases": []}]},
            "access.call_policy[0].allow_ases: list at least",
        ),
        (
            {"call_policy": [{"names": ["a.*"], "deny_ases": [0]}]},
            "access.call_policy[0].deny_ases[0]: 0 is not an AS",
        ),
        (
            {"call_policy": [{"names": ["a.*"], "deny_ases": ["65001"]}]},
            "access.call_policy[0].deny_ases[0]: expected an integer",
        ),
        (
            {"call_policy": [{"names": ["a.*"], "deny_ases": [1], "match": "every"}]},
            "access.call_policy[0].match: Input should be",
        ),
    ],
)
def test_configuration_problems_are_reported_where_they_are(data: dict[str, Any], expected: str) -> None:
    found = problems(data)
    assert any(problem.startswith(expected) for problem in found), found


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = problems(
        {
            "callers": [{"name": "ops", "tokens": ["short"], "deny_names": ["a b"]}],
            "call_policy": [{"names": ["a.*"]}],
        }
    )
    assert [problem.split(":")[0] for problem in found] == [
        "access.callers[0].tokens[0]",
        "access.callers[0].deny_names[0]",
        "access.call_policy[0]",
    ]


def test_secrets_never_appear_in_problems() -> None:
    found = problems({"callers": [{"name": "a", "tokens": [TOKEN]}, {"name": "b", "tokens": [TOKEN]}]})
    assert found and not any(TOKEN in problem for problem in found)


def test_null_means_the_default() -> None:
    config = AccessConfig.model_validate(
        {"callers": None, "jwt": None, "stdio_caller": None, "call_policy": None}
    )
    assert config == AccessConfig()

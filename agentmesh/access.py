"""Access control for calls: who may call what. Sans-IO: no sockets, no asyncio, no clock.

Theory of operation
-------------------
Two independent gates, each owned by a different party:

* **Caller rules, at the MCP front-end** (`CallerRules`). The operator of the node an MCP client
  connects to knows who the client is (a bearer token, an API key or a JWT, see `Authenticator`)
  and decides which agent names and capability tags that caller may reach. Deny beats allow: a
  name matched by a `deny_*` entry is refused whatever else matches; a caller with any `allow_*`
  entry may call only what one of them matches (a name pattern *or* an advertised tag).
* **Call policy, at the origin** (`CallPolicy`). The node whose backend would run the call decides
  which ASes may call its agents. It cannot see the front-end's caller, only the call's path: the
  ASNs of the nodes it crossed (`AgentCall.trace_asns`), the first of them the caller's AS. Every
  rule whose names match applies; the first one (in configuration order) that refuses decides.

Both answer a `Verdict` whose `rule` names the configuration entry that decided, in the words an
operator reads back in the YAML (`access.callers[ops].deny_names[0] "billing.**"`), so that a
refused caller, the audit log and the operator all talk about the same line.

Name patterns follow the mesh's own grammar: an exact name, an aggregate `a.b.*` covering every
name below `a.b` (as a route does), or a glob with `ResolutionIndex.glob` semantics (`*`, `?` and
`[...]` within one label, `**` across labels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import jwt
from jwt.types import Options

from agentmesh.rib.names import AGGREGATE_SUFFIX
from agentmesh.rib.resolve import glob_matches, is_glob

__all__ = [
    "ALLOWED",
    "Access",
    "AsMatch",
    "AuthFailure",
    "Authenticator",
    "CallPolicy",
    "Caller",
    "CallerRules",
    "JwtVerifier",
    "NamePattern",
    "PolicyRule",
    "Verdict",
    "secret_digest",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a call may go on, and the configuration entry that decided ("" when nothing did)."""

    allowed: bool
    rule: str = ""

    @property
    def reason(self) -> str:
        """The verdict in words, as a refused caller reads it: `denied by <rule>`."""
        return f"denied by {self.rule}" if not self.allowed else f"allowed by {self.rule or 'default'}"


#: Nothing restricts the call.
ALLOWED = Verdict(True)


class _Kind(Enum):
    EXACT = "exact"
    AGGREGATE = "aggregate"
    GLOB = "glob"


@dataclass(frozen=True, slots=True)
class NamePattern:
    """One entry of `allow_names`, `deny_names` or `call_policy[].names`."""

    text: str
    kind: _Kind

    @classmethod
    def parse(cls, text: str) -> NamePattern:
        # The same precedence as the resolver's: `a.*` alone is an aggregate, any other wildcard a glob.
        if is_glob(text):
            return cls(text, _Kind.GLOB)
        if text.endswith(AGGREGATE_SUFFIX):
            return cls(text, _Kind.AGGREGATE)
        return cls(text, _Kind.EXACT)

    def matches(self, name: str) -> bool:
        if self.kind is _Kind.EXACT:
            return name == self.text
        if self.kind is _Kind.AGGREGATE:
            # `a.b.*` covers every name below `a.b` at any depth, and the aggregate route itself.
            return name.startswith(self.text[:-1])
        return glob_matches(self.text, name)

    def __str__(self) -> str:
        return self.text


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _first_match(patterns: Iterable[NamePattern], name: str) -> tuple[int, NamePattern] | None:
    return next(((i, p) for i, p in enumerate(patterns) if p.matches(name)), None)


def _first_tag(tags: Iterable[str], capabilities: Iterable[str]) -> tuple[int, str] | None:
    advertised = frozenset(capabilities)
    return next(((i, tag) for i, tag in enumerate(tags) if tag in advertised), None)


# -- caller rules (the MCP front-end) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerRules:
    """What one configured caller may call (`access.callers[<caller>]`)."""

    caller: str
    allow_names: tuple[NamePattern, ...] = ()
    deny_names: tuple[NamePattern, ...] = ()
    allow_capabilities: tuple[str, ...] = ()
    deny_capabilities: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"access.callers[{self.caller}]"

    @property
    def restricted(self) -> bool:
        """Whether the caller may call only what an allow entry matches."""
        return bool(self.allow_names or self.allow_capabilities)

    def check(self, name: str, capabilities: Iterable[str] = ()) -> Verdict:
        """May this caller call `name`, an agent advertising `capabilities`? Deny beats allow."""
        capabilities = tuple(capabilities)
        denied = self._denied(name, capabilities)
        if denied is not None:
            return denied
        if not self.restricted:
            return ALLOWED
        named = _first_match(self.allow_names, name)
        if named is not None:
            return Verdict(True, f"{self.where}.allow_names[{named[0]}] {_quoted(named[1].text)}")
        tagged = _first_tag(self.allow_capabilities, capabilities)
        if tagged is not None:
            return Verdict(True, f"{self.where}.allow_capabilities[{tagged[0]}] {_quoted(tagged[1])}")
        return Verdict(False, f"{self.where} (no allow_names or allow_capabilities entry matches)")

    def _denied(self, name: str, capabilities: tuple[str, ...]) -> Verdict | None:
        named = _first_match(self.deny_names, name)
        if named is not None:
            return Verdict(False, f"{self.where}.deny_names[{named[0]}] {_quoted(named[1].text)}")
        tagged = _first_tag(self.deny_capabilities, capabilities)
        if tagged is not None:
            return Verdict(False, f"{self.where}.deny_capabilities[{tagged[0]}] {_quoted(tagged[1])}")
        return None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: who it is (for the audit log) and the rules that apply to it.

    `name` and `rules.caller` differ only for a JWT whose subject has no entry of its own and gets
    the rules of `jwt.default_caller`.
    """

    name: str
    rules: CallerRules

    def check(self, name: str, capabilities: Iterable[str] = ()) -> Verdict:
        return self.rules.check(name, capabilities)


# -- call policy (the origin) --------------------------------------------------------------------


class AsMatch(Enum):
    """Which ASes of a call's path a call policy rule looks at."""

    #: The caller's AS: the first on the path.
    ORIGIN = "origin"
    #: Every AS on the path: each must pass the rule.
    ANY_HOP = "any_hop"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """`access.call_policy[index]`: which ASes may (allow) or may not (deny) call the names."""

    index: int
    names: tuple[NamePattern, ...]
    ases: frozenset[int]
    allow: bool
    match: AsMatch = AsMatch.ORIGIN

    def applies_to(self, name: str) -> bool:
        return _first_match(self.names, name) is not None

    def refusal(self, path: tuple[int, ...]) -> str | None:
        """Why this rule refuses a call that crossed the ASes `path` (caller first), or None."""
        if not path:
            # A node on the way did not record its AS: fail closed rather than guess the caller.
            return "the caller's AS is unknown: a node on the path did not record its AS"
        checked = path[:1] if self.match is AsMatch.ORIGIN else path
        for hop, asn in enumerate(checked, start=1):
            if (asn in self.ases) != self.allow:
                return self._describe(asn, hop)
        return None

    def _describe(self, asn: int, hop: int) -> str:
        listed = "allow_ases" if self.allow else "deny_ases"
        relation = "not in" if self.allow else "in"
        where = "" if self.match is AsMatch.ORIGIN else f", hop {hop} of the path,"
        return f"AS{asn}{where} {relation} {listed}"


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """The origin's rules for calls to the agents it hosts; empty: every AS may call."""

    rules: tuple[PolicyRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(self, name: str, trace_asns: tuple[int, ...]) -> Verdict:
        """May a call to `name` that crossed `trace_asns` (caller's AS first; () if unknown) run here?"""
        for rule in self.rules:
            if rule.applies_to(name):
                refusal = rule.refusal(trace_asns)
                if refusal is not None:
                    return Verdict(False, f"access.call_policy[{rule.index}] ({refusal})")
        return ALLOWED


# -- authentication (the MCP front-end) ----------------------------------------------------------


class AuthFailure(Exception):
    """Why a request's credential was refused: for the audit log only, never for the client."""


def secret_digest(secret: str) -> bytes:
    """The key under which a token or API key is looked up.

    A dict keyed by the SHA-256 of the secret: the lookup time depends on the digest, which an
    attacker cannot steer towards a real secret, so it leaks nothing a constant-time compare would
    protect, and the raw secrets need not be kept once compiled.
    """
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    """Validates JWTs: HS256 with a shared secret and/or RS256 with an RSA public key.

    Expiry (`exp`) and not-before (`nbf`) are checked here against the `now` given, not by PyJWT's
    own clock, so that the check is a pure function of its arguments like the rest of this module.
    """

    hs256_secret: bytes | None = None
    rs256_public_key: Any = None  # a cryptography RSAPublicKey
    issuer: str | None = None
    audience: str | None = None
    caller_claim: str = "sub"
    require_exp: bool = True
    leeway: float = 0.0

    def verify(self, token: str, now: float) -> str:
        """The caller named by a valid token; raises AuthFailure."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as error:
            raise AuthFailure(f"not a JWT: {error}") from None
        claims = self._decode(token, self._key_for(algorithm), str(algorithm))
        self._check_times(claims, now)
        caller = claims.get(self.caller_claim)
        if not isinstance(caller, str) or not caller:
            raise AuthFailure(f"JWT claim {self.caller_claim!r} is missing or not a string")
        return caller

    def _key_for(self, algorithm: object) -> Any:
        # The key is picked by the algorithm the token claims, and only that algorithm is accepted with
        # it: an RSA public key is never tried as an HMAC secret (RFC 8725 §2.1, algorithm confusion).
        if algorithm == "HS256" and self.hs256_secret is not None:
            return self.hs256_secret
        if algorithm == "RS256" and self.rs256_public_key is not None:
            return self.rs256_public_key
        raise AuthFailure(f"JWT algorithm {algorithm!r} is not accepted here")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        options: Options = {
            "verify_exp": False,  # checked by _check_times against the caller's clock
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
            "require": ["iss"] if self.issuer is not None else [],
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options=options,
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.InvalidTokenError as error:
            raise AuthFailure(f"invalid JWT: {error}") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        expires, not_before = claims.get("exp"), claims.get("nbf")
        if expires is None and self.require_exp:
            raise AuthFailure("JWT has no exp claim")
        if expires is not None and (not _is_number(expires) or now >= expires + self.leeway):
            raise AuthFailure("JWT has expired")
        if not_before is not None and (not _is_number(not_before) or now < not_before - self.leeway):
            raise AuthFailure("JWT is not valid yet (nbf)")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Maps a request's credential to a configured caller."""

    callers: Mapping[str, CallerRules]
    #: secret_digest(token) -> caller name, for `Authorization: Bearer <token>`.
    tokens: Mapping[bytes, str] = field(default_factory=dict)
    #: secret_digest(key) -> caller name, for `X-API-Key: <key>`.
    api_keys: Mapping[bytes, str] = field(default_factory=dict)
    jwt: JwtVerifier | None = None
    #: The caller whose rules apply to a valid JWT naming a caller that has no entry; None: refused.
    default_caller: str | None = None

    def authenticate(self, bearer: str | None, api_key: str | None, now: float) -> Caller:
        """The caller a request's credential names; raises AuthFailure.

        A bearer token is preferred when both are sent: it is the standard header (RFC 6750), and
        trying the other after a refusal would let one request probe two secrets.
        """
        if bearer:
            return self._bearer(bearer, now)
        if api_key:
            name = self.api_keys.get(secret_digest(api_key))
            if name is None:
                raise AuthFailure("unknown API key")
            return Caller(name, self.callers[name])
        raise AuthFailure("no credential")

    def _bearer(self, token: str, now: float) -> Caller:
        name = self.tokens.get(secret_digest(token))
        if name is not None:
            return Caller(name, self.callers[name])
        if self.jwt is None:
            raise AuthFailure("unknown bearer token")
        subject = self.jwt.verify(token, now)
        rules = self.callers.get(subject)
        if rules is None and self.default_caller is not None:
            rules = self.callers[self.default_caller]
        if rules is None:
            raise AuthFailure(f"JWT names caller {subject!r}, which has no entry in access.callers")
        return Caller(subject, rules)


@dataclass(frozen=True, slots=True)
class Access:
    """A node's compiled access settings (`access_config.compile_access`)."""

    #: Who may use the MCP front-end over HTTP; None: anyone may (no callers or jwt configured).
    authenticator: Authenticator | None = None
    #: The caller whose rules apply to sessions without credentials (stdio, in-process); None: open.
    stdio: Caller | None = None
    call_policy: CallPolicy = field(default_factory=CallPolicy)

    @property
    def authenticates(self) -> bool:
        return self.authenticator is not None

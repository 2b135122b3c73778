"""The `access` section of a node's configuration, and its compilation into `agentmesh.access` values.

::

    access:
      callers:                  # who may use the MCP front-end over HTTP, and what each may call
        - name: ops
          tokens: [...]         # Authorization: Bearer <token>
          token_files: [...]    # one token per file (e.g. a mounted secret)
          api_keys: [...]       # X-API-Key: <key>
          api_key_files: [...]
          allow_names: [...]    # exact names, aggregates (a.b.*) or globs (a.*.c, a.**)
          deny_names: [...]
          allow_capabilities: [...]
          deny_capabilities: [...]
      jwt: {...}                # bearer JWTs: HS256 and/or RS256; the caller is a claim (sub)
      stdio_caller: ops         # whose rules apply to stdio / in-process sessions; unset: open
      call_policy:              # checked where the agent runs, against the ASes the call crossed
        - names: [...]
          allow_ases: [...]     # or deny_ases
          match: origin         # or any_hop

Validation follows the conventions of `agentmesh.config` (strict types, unknown keys refused,
every problem reported at its own location, `null` meaning the default). This module must not
import `agentmesh.config` at import time: `config` imports this module to embed `AccessConfig`,
so the one helper shared with it (`_Problems`) is looked up when a problem is raised.

Secrets given in files are read by `compile_access`, when the node starts serving, not when the
configuration is parsed: validating a configuration must not depend on the host it is checked on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Literal, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from agentmesh.access import (
    Access,
    AsMatch,
    Authenticator,
    Caller,
    CallerRules,
    CallPolicy,
    JwtVerifier,
    NamePattern,
    PolicyRule,
    secret_digest,
)
from agentmesh.config_base import ConfigModel, Location, Problems

__all__ = [
    "AccessConfig",
    "CallPolicyRuleConfig",
    "CallerConfig",
    "JwtConfig",
    "compile_access",
    "compile_call_policy",
]

#: Shortest token or API key accepted: anything shorter is guessable.
MIN_SECRET_LENGTH = 16
#: Shortest HS256 secret: RFC 7518 §3.2 wants a key at least as long as the hash output (256 bits).
MIN_HS256_SECRET_LENGTH = 32
#: Smallest RS256 key: RFC 7518 §3.3.
MIN_RSA_KEY_BITS = 2048

_ASN_MAX = 0xFFFF_FFFF
_PATTERN_MAX = 255
_CALLER_MAX = 253
_LABEL_RE = re.compile(r"\*\*|[A-Za-z0-9_*?!\[\]-]+")
_CALLER_RE = re.compile(r"[^\s\[\]]+")


def _problems(items: Sequence[tuple[Location, str]]) -> ValueError:
    return Problems(items)


# -- field checks ----------------------------------------------------------------------------------


def _secret(value: str) -> str:
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters; a short secret is guessable")
    return value


def _pattern(value: str) -> str:
    if not value or len(value) > _PATTERN_MAX:
        raise ValueError(f"a name pattern has 1 to {_PATTERN_MAX} characters")
    if not all(_LABEL_RE.fullmatch(label) for label in value.split(".")):
        raise ValueError(
            f"{value!r} is not a name, an aggregate (a.b.*) or a glob (a.*.c, a.**): dotted labels of"
            " letters, digits, '_' and '-', with *, ?, [...] and ** as wildcards"
        )
    return value


def _tag(value: str) -> str:
    if not value.strip():
        raise ValueError("a capability tag must not be empty")
    return value


def _caller_name(value: str) -> str:
    if len(value) > _CALLER_MAX or not _CALLER_RE.fullmatch(value):
        raise ValueError(
            f"a caller name has 1 to {_CALLER_MAX} characters, without spaces, control characters or []"
        )
    return value


def _asn(value: int) -> int:
    if not 1 <= value < _ASN_MAX:
        raise ValueError(f"{value} is not an AS number (1..{_ASN_MAX - 1})")
    return value


Secret = Annotated[StrictStr, AfterValidator(_secret)]
Pattern = Annotated[StrictStr, AfterValidator(_pattern)]
Tag = Annotated[StrictStr, AfterValidator(_tag)]
Asn = Annotated[StrictInt, AfterValidator(_asn)]


_Model = ConfigModel


# -- models ---------------------------------------------------------------------------------------


class CallerConfig(_Model):
    """A caller of the MCP front-end: its credentials and what it may call."""

    name: Annotated[StrictStr, AfterValidator(_caller_name)]
    tokens: tuple[Secret, ...] = ()
    token_files: tuple[StrictStr, ...] = ()
    api_keys: tuple[Secret, ...] = ()
    api_key_files: tuple[StrictStr, ...] = ()
    allow_names: tuple[Pattern, ...] = ()
    deny_names: tuple[Pattern, ...] = ()
    allow_capabilities: tuple[Tag, ...] = ()
    deny_capabilities: tuple[Tag, ...] = ()

    def rules(self) -> CallerRules:
        return CallerRules(
            caller=self.name,
            allow_names=tuple(NamePattern.parse(p) for p in self.allow_names),
            deny_names=tuple(NamePattern.parse(p) for p in self.deny_names),
            allow_capabilities=self.allow_capabilities,
            deny_capabilities=self.deny_capabilities,
        )


class JwtConfig(_Model):
    """Bearer JWTs as credentials: signed with HS256 (a shared secret) and/or RS256 (an RSA key)."""

    hs256_secret: StrictStr | None = None
    hs256_secret_file: StrictStr | None = None
    rs256_public_key: StrictStr | None = None
    rs256_public_key_file: StrictStr | None = None
    issuer: StrictStr | None = None
    audience: StrictStr | None = None
    caller_claim: StrictStr = "sub"
    default_caller: StrictStr | None = None
    require_exp: StrictBool = True
    leeway_seconds: StrictInt = Field(default=0, ge=0, le=300)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = [*self._key_problems(), *self._secret_problems()]
        if not self.caller_claim:
            problems.append((("caller_claim",), "must name a claim, e.g. sub"))
        if problems:
            raise _problems(problems)
        return self

    def _key_problems(self) -> list[tuple[Location, str]]:
        problems: list[tuple[Location, str]] = []
        for inline, file in (
            ("hs256_secret", "hs256_secret_file"),
            ("rs256_public_key", "rs256_public_key_file"),
        ):
            if getattr(self, inline) is not None and getattr(self, file) is not None:
                problems.append(((file,), f"give {inline} or {file}, not both"))
        if all(getattr(self, key) is None for key in _JWT_KEYS):
            problems.append(((), f"give a key to check signatures with: one of {', '.join(_JWT_KEYS)}"))
        return problems

    def _secret_problems(self) -> list[tuple[Location, str]]:
        problems: list[tuple[Location, str]] = []
        if self.hs256_secret is not None and len(self.hs256_secret) < MIN_HS256_SECRET_LENGTH:
            problems.append(
                (("hs256_secret",), f"must be at least {MIN_HS256_SECRET_LENGTH} characters (RFC 7518 §3.2)")
            )
        if self.rs256_public_key is not None:
            try:
                _rsa_public_key(self.rs256_public_key.encode("utf-8"))
            except ValueError as error:
                problems.append((("rs256_public_key",), str(error)))
        return problems

    def verifier(self) -> JwtVerifier:
        """The verifier, with the keys read from their files where they are given that way."""
        secret = self.hs256_secret
        if self.hs256_secret_file is not None:
            secret = _read_secret(
                self.hs256_secret_file, "access.jwt.hs256_secret_file", MIN_HS256_SECRET_LENGTH
            )
        pem = self.rs256_public_key
        if self.rs256_public_key_file is not None:
            pem = _read_file(self.rs256_public_key_file, "access.jwt.rs256_public_key_file")
        public_key = None
        if pem is not None:
            try:
                public_key = _rsa_public_key(pem.encode("utf-8"))
            except ValueError as error:
                raise ValueError(f"access.jwt.rs256_public_key_file: {error}") from None
        return JwtVerifier(
            hs256_secret=None if secret is None else secret.encode("utf-8"),
            rs256_public_key=public_key,
            issuer=self.issuer,
            audience=self.audience,
            caller_claim=self.caller_claim,
            require_exp=self.require_exp,
            leeway=float(self.leeway_seconds),
        )


_JWT_KEYS = ("hs256_secret", "hs256_secret_file", "rs256_public_key", "rs256_public_key_file")


class CallPolicyRuleConfig(_Model):
    """Which ASes may (allow_ases) or may not (deny_ases) call the agents named, hosted here."""

    names: tuple[Pattern, ...]
    allow_ases: tuple[Asn, ...] | None = None
    deny_ases: tuple[Asn, ...] | None = None
    match: Literal["origin", "any_hop"] = "origin"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[Location, str]] = []
        if not self.names:
            problems.append((("names",), "list at least one name pattern the rule applies to"))
        if (self.allow_ases is None) == (self.deny_ases is None):
            where: Location = ("deny_ases",) if self.allow_ases is not None else ()
            problems.append((where, "give allow_ases or deny_ases (exactly one)"))
        for key in ("allow_ases", "deny_ases"):
            if getattr(self, key) == ():
                problems.append(((key,), "list at least one AS number"))
        if problems:
            raise _problems(problems)
        return self

    def compile(self, index: int) -> PolicyRule:
        listed = self.allow_ases if self.allow_ases is not None else self.deny_ases or ()
        return PolicyRule(
            index=index,
            names=tuple(NamePattern.parse(p) for p in self.names),
            ases=frozenset(listed),
            allow=self.allow_ases is not None,
            match=AsMatch(self.match),
        )


class AccessConfig(_Model):
    """Access control for calls. Empty (the default): the node is open, exactly as without it."""

    callers: tuple[CallerConfig, ...] = ()
    jwt: JwtConfig | None = None
    stdio_caller: StrictStr | None = None
    call_policy: tuple[CallPolicyRuleConfig, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = [*self._duplicate_callers(), *self._duplicate_secrets(), *self._references()]
        if problems:
            raise _problems(problems)
        return self

    @property
    def authenticates(self) -> bool:
        """Whether HTTP requests to the MCP front-end need a credential."""
        return bool(self.callers) or self.jwt is not None

    def _duplicate_callers(self) -> list[tuple[Location, str]]:
        seen: dict[str, int] = {}
        problems: list[tuple[Location, str]] = []
        for index, caller in enumerate(self.callers):
            if caller.name in seen:
                problems.append(
                    (
                        ("callers", index, "name"),
                        f"duplicate caller {caller.name!r}, already callers[{seen[caller.name]}]",
                    )
                )
            seen.setdefault(caller.name, index)
        return problems

    def _duplicate_secrets(self) -> list[tuple[Location, str]]:
        # One secret must identify one caller; the message names where, never the secret itself.
        seen: dict[str, Location] = {}
        problems: list[tuple[Location, str]] = []
        for index, caller in enumerate(self.callers):
            for kind in ("tokens", "api_keys"):
                for position, secret in enumerate(getattr(caller, kind)):
                    here: Location = ("callers", index, kind, position)
                    if secret in seen:
                        problems.append(
                            (here, f"the same secret is already given at {_format(seen[secret])}")
                        )
                    seen.setdefault(secret, here)
        return problems

    def _references(self) -> list[tuple[Location, str]]:
        names = {caller.name for caller in self.callers}
        problems: list[tuple[Location, str]] = []
        if self.stdio_caller is not None and self.stdio_caller not in names:
            problems.append((("stdio_caller",), f"no caller named {self.stdio_caller!r} in access.callers"))
        jwt = self.jwt
        if jwt is not None and jwt.default_caller is not None and jwt.default_caller not in names:
            problems.append(
                (("jwt", "default_caller"), f"no caller named {jwt.default_caller!r} in access.callers")
            )
        if jwt is not None and not names:
            problems.append(
                (("jwt",), "a JWT's caller gets the rules of its entry in access.callers: configure callers")
            )
        return problems


def _format(location: Location) -> str:
    text = "access"
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# -- secrets in files -----------------------------------------------------------------------------


def _read_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise ValueError(f"{where}: cannot read {path}: {error.strerror or error}") from None


def _read_secret(path: str, where: str, minimum: int = MIN_SECRET_LENGTH) -> str:
    secret = _read_file(path, where).strip()
    if len(secret) < minimum:
        raise ValueError(f"{where}: {path} holds fewer than {minimum} characters")
    return secret


def _rsa_public_key(pem: bytes) -> RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key: {error}") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("RS256 needs an RSA public key")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(
            f"an RS256 key has at least {MIN_RSA_KEY_BITS} bits (RFC 7518 §3.3), this one {key.key_size}"
        )
    return key


def _secrets_of(index: int, caller: CallerConfig, kind: str) -> Iterable[tuple[str, str]]:
    """(where, secret) for each inline and file-given secret of one kind ("tokens" or "api_keys")."""
    files = "token_files" if kind == "tokens" else "api_key_files"
    for position, secret in enumerate(getattr(caller, kind)):
        yield f"access.callers[{index}].{kind}[{position}]", secret
    for position, path in enumerate(getattr(caller, files)):
        where = f"access.callers[{index}].{files}[{position}]"
        yield where, _read_secret(path, where)


def _digests(config: AccessConfig, kind: str) -> dict[bytes, str]:
    digests: dict[bytes, str] = {}
    origin: dict[bytes, str] = {}
    for index, caller in enumerate(config.callers):
        for where, secret in _secrets_of(index, caller, kind):
            digest = secret_digest(secret)
            if digest in digests and digests[digest] != caller.name:
                raise ValueError(f"{where}: the same secret is already given at {origin[digest]}")
            digests[digest], origin[digest] = caller.name, where
    return digests


# -- compilation ----------------------------------------------------------------------------------


def compile_call_policy(config: AccessConfig | None) -> CallPolicy:
    """The origin's call policy (`Forwarder(call_policy=...)`); empty without `access.call_policy`."""
    if config is None:
        return CallPolicy()
    return CallPolicy(tuple(rule.compile(index) for index, rule in enumerate(config.call_policy)))


def compile_access(config: AccessConfig | None) -> Access:
    """Everything the node enforces, secrets in files read now; raises ValueError naming the entry."""
    if config is None:
        return Access()
    callers = {caller.name: caller.rules() for caller in config.callers}
    stdio = None if config.stdio_caller is None else Caller(config.stdio_caller, callers[config.stdio_caller])
    return Access(_authenticator(config, callers), stdio, compile_call_policy(config))


def _authenticator(config: AccessConfig, callers: dict[str, CallerRules]) -> Authenticator | None:
    if not config.authenticates:
        return None
    jwt = config.jwt
    return Authenticator(
        callers=callers,
        tokens=_digests(config, "tokens"),
        api_keys=_digests(config, "api_keys"),
        jwt=None if jwt is None else jwt.verifier(),
        default_caller=None if jwt is None else jwt.default_caller,
    )

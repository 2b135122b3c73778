"""Resolution indexes over the Loc-RIB: longest match, capability tags and globs, without scans.

* Exact names and aggregates: the Loc-RIB dict itself. A name resolves to its own entry or else to
  the longest aggregate covering it (`a.b.c` -> `a.b.*` -> `a.*`): one dict lookup per label.
* Capability tags: tag -> names whose best path carries the tag.
* Globs: a trie of labels. `*`, `?` and `[...]` match within one label (fnmatch); a `**` label
  matches any number of labels. Only the branches a wildcard label opens are walked.

The Rib calls `update` with every name whose best path changed, so the indexes follow it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Protocol

from agentmesh.rib.names import covering_aggregates

_WILDCARDS = frozenset("*?[")
_TERMINAL = ""  # labels are never empty, so "" marks "a name ends here"

Trie = dict[str, "Trie | str"]


class _HasCapabilities(Protocol):
    @property
    def capabilities(self) -> tuple[str, ...]: ...


class _Agentful(Protocol):
    @property
    def agent(self) -> _HasCapabilities: ...


class _PathLike(Protocol):
    @property
    def attrs(self) -> _Agentful: ...


def is_glob(pattern: str) -> bool:
    """Whether `pattern` is a glob rather than a name; a trailing `.*` alone is an aggregate."""
    body = pattern[:-2] if pattern.endswith(".*") else pattern
    return any(char in _WILDCARDS for char in body)


class ResolutionIndex:
    """Capability and label indexes that follow the Loc-RIB."""

    def __init__(self) -> None:
        self._by_capability: dict[str, set[str]] = {}
        self._trie: Trie = {}

    def update(self, changed: Mapping[str, _PathLike | None], loc: Mapping[str, _PathLike]) -> None:
        """Follow best-path changes: `changed` maps each name to its previous best path."""
        for name, old in changed.items():
            new = loc.get(name)
            old_tags = old.attrs.agent.capabilities if old is not None else ()
            new_tags = new.attrs.agent.capabilities if new is not None else ()
            if old_tags != new_tags:
                for tag in old_tags:
                    self._discard_tag(tag, name)
                for tag in new_tags:
                    self._by_capability.setdefault(tag, set()).add(name)
            if old is None and new is not None:
                self._insert(name)
            elif new is None and old is not None:
                self._remove(name)

    def _discard_tag(self, tag: str, name: str) -> None:
        names = self._by_capability.get(tag)
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_capability[tag]

    # A child is a dict (labels continue below it) or, for the common leaf, just the name string:
    # a million leaves then cost a dict slot each instead of a dict each.

    def _insert(self, name: str) -> None:
        *path, last = name.split(".")
        node = self._trie
        for label in path:
            child = node.get(label)
            if child is None:
                child = node[label] = {}
            elif isinstance(child, str):
                child = node[label] = {_TERMINAL: child}  # a leaf gains children
            node = child
        existing = node.get(last)
        if isinstance(existing, dict):
            existing[_TERMINAL] = name
        else:
            node[last] = name

    def _remove(self, name: str) -> None:
        *path, last = name.split(".")
        trail: list[tuple[Trie, str]] = []
        node = self._trie
        for label in path:
            child = node.get(label)
            if not isinstance(child, dict):
                return
            trail.append((node, label))
            node = child
        existing = node.get(last)
        if isinstance(existing, str):
            del node[last]
        elif isinstance(existing, dict):
            existing.pop(_TERMINAL, None)
            if not existing:
                del node[last]
        for parent, label in reversed(trail):
            if parent[label]:
                break
            del parent[label]

    # -- queries ---------------------------------------------------------------------------

    def by_capability(self, tag: str) -> frozenset[str]:
        return frozenset(self._by_capability.get(tag, ()))

    def glob(self, pattern: str, limit: int | None = None) -> list[str]:
        """Names matching a glob, sorted; with `limit`, the walk stops after that many (any of them)."""
        found: set[str] = set()  # two `**` labels can reach one name along several splits
        for name in self._match(self._trie, pattern.split("."), 0):
            found.add(name)
            if limit is not None and len(found) >= limit:
                break
        return sorted(found)

    def _match(self, node: Trie | str, labels: list[str], i: int) -> Iterator[str]:
        if isinstance(node, str):
            # A leaf: the name ends here, so only `**` labels (matching nothing) may be left.
            if all(label == "**" for label in labels[i:]):
                yield node
            return
        if i == len(labels):
            terminal = node.get(_TERMINAL)
            if isinstance(terminal, str):
                yield terminal
            return
        label = labels[i]
        if label == "**":
            yield from self._match(node, labels, i + 1)  # ** matching no label
            for key, child in node.items():
                if key != _TERMINAL:
                    yield from self._match(child, labels, i)
        elif any(char in _WILDCARDS for char in label):
            for key, child in node.items():
                if key != _TERMINAL and fnmatchcase(key, label):
                    yield from self._match(child, labels, i + 1)
        else:
            exact = node.get(label)
            if exact is not None:
                yield from self._match(exact, labels, i + 1)


def longest_match(name: str, loc: Mapping[str, _PathLike]) -> str | None:
    """The Loc-RIB entry that serves `name`: itself, else the longest covering aggregate."""
    if name in loc:
        return name
    for aggregate in covering_aggregates(name):
        if aggregate in loc:
            return aggregate
    return None


def glob_matches(pattern: str, name: str) -> bool:
    """Whether `name` matches a glob with the semantics of `ResolutionIndex.glob`, without an index."""
    return _labels_match(pattern.split("."), name.split("."))


def _labels_match(pattern: list[str], labels: list[str]) -> bool:
    if not pattern:
        return not labels
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_labels_match(rest, labels[skip:]) for skip in range(len(labels) + 1))
    return bool(labels) and fnmatchcase(labels[0], head) and _labels_match(rest, labels[1:])

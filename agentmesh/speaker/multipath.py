"""Spreading calls over equally good paths: the order in which a call tries them.

The routing core hands the forwarder up to `maximum_paths` equally good paths for a name
(`Rib.lookup_paths`). A `PathChooser` puts them in the order a call should try them: the first is
the one the strategy picks, the others are fallbacks for a call that fails before it reached a
backend. Strategies:

* `round_robin` - each call of a name takes the next path in turn;
* `least_outstanding` - the path with the fewest calls in flight from this node;
* `power_of_two` - two paths drawn at random, the one with fewer calls in flight (cheap, and
  without the herd behaviour of always picking the global least);
* `weighted_health` - drawn at random with weights from the health the origin advertises (latency,
  error rate, load), so a degraded origin gets a smaller share without being dropped.

The chooser keeps only counters and an RNG (injected, so tests are deterministic); the forwarder
tells it when calls start and end.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from enum import Enum

from agentmesh.bgp.messages import Health
from agentmesh.rib.decision import Path


class Strategy(Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_OUTSTANDING = "least_outstanding"
    POWER_OF_TWO = "power_of_two"
    WEIGHTED_HEALTH = "weighted_health"


def health_weight(health: Health) -> float:
    """A path's share under `weighted_health`: 1 for a perfect origin, less as it degrades."""
    latency = 1.0 / (1.0 + max(health.latency_ms, 0.0) / 100.0)
    errors = 1.0 - min(max(health.error_rate, 0.0), 0.99)
    load = 1.0 - min(max(health.load, 0.0), 0.99) / 2
    return latency * errors * load


class PathChooser:
    """Orders equally good paths for each call according to one strategy."""

    def __init__(self, strategy: Strategy = Strategy.ROUND_ROBIN, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self._rng = rng or random.Random()
        self._turn: Counter[str] = Counter()
        #: Calls in flight per NEXT_HOP, from this node.
        self.outstanding: Counter[str] = Counter()

    def order(self, entry: str, paths: Sequence[Path]) -> list[Path]:
        """The paths in the order to try them: the chosen one first, then the others best first."""
        if len(paths) <= 1:
            return list(paths)
        chosen = self._choose(entry, paths)
        return [chosen, *(path for path in paths if path is not chosen)]

    def _choose(self, entry: str, paths: Sequence[Path]) -> Path:
        if self.strategy is Strategy.ROUND_ROBIN:
            turn = self._turn[entry]
            self._turn[entry] = turn + 1
            return paths[turn % len(paths)]
        if self.strategy is Strategy.LEAST_OUTSTANDING:
            return min(paths, key=lambda path: self.outstanding[path.attrs.next_hop])
        if self.strategy is Strategy.POWER_OF_TWO:
            first, second = self._rng.sample(list(paths), 2)
            return min((first, second), key=lambda path: self.outstanding[path.attrs.next_hop])
        weights = [health_weight(path.attrs.agent.health) for path in paths]
        return self._rng.choices(list(paths), weights=weights)[0]

    def started(self, next_hop: str) -> None:
        self.outstanding[next_hop] += 1

    def finished(self, next_hop: str) -> None:
        self.outstanding[next_hop] -= 1
        if self.outstanding[next_hop] <= 0:
            del self.outstanding[next_hop]

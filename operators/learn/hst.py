"""Half-Space Trees with packed trees: River's algorithm, a fraction of River's memory.

River's ``anomaly.HalfSpaceTrees`` keeps every node of every tree as a Python object; a
default model (10 trees of height 8: 5,110 nodes) takes about 1.2 MiB of RSS, so 10,000
devices with a model each would need 12 GiB. This subclass grows exactly the same trees
(River's ``make_padded_tree``, replayed draw for draw on the same generator) straight into
flat arrays in heap order, children of node ``j`` at ``2j+1`` and ``2j+2``: split features and
thresholds for the inner nodes, the two masses for every node (2 bytes each while the
window is under 65,536). The same model takes about 50 KiB (60 KiB of RSS with its scaler
and operator), and walks the same paths with the same integer masses, so its scores are
identical to River's, bit for bit (``tests/test_learn_models.py`` checks it against River).
The price is CPU: reading an array element costs more than reading an attribute, about
1.3x River's time per event (``bench/learn.py``).

This module imports River: it is only imported through the model allowlist, on first use.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from typing import Any

from river import anomaly


def _zeros(n: int, most: int) -> array[int]:
    typecode = "H" if most < 2**16 else "I"
    return array(typecode, bytes(array(typecode).itemsize * n))


class HalfSpaceTrees(anomaly.HalfSpaceTrees):
    """River's Half-Space Trees with its trees stored in arrays (identical scores).

    Same parameters as :class:`river.anomaly.HalfSpaceTrees`.

    >>> hst = HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
    >>> for x in [0.5, 0.45, 0.43]:
    ...     hst.learn_one({"x": x})
    >>> [round(hst.score_one({"x": x}), 3) for x in (0.45, 0.0)]
    [0.071, 0.853]
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: dict[Hashable, tuple[float, float]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(n_trees, height, window_size, limits, seed)
        self._names: tuple[Hashable, ...] = ()
        self._feature = array("H")  # inner nodes: index into _names
        self._threshold = array("d")  # inner nodes
        self._l_mass = _zeros(0, window_size)  # every node: mass of the window being filled
        self._r_mass = _zeros(0, window_size)  # every node: mass of the last full window

    @property
    def ready(self) -> bool:
        """False until the first window is full: until then every score is 0."""
        return not self._first_window

    def _build(self, x: dict[Hashable, Any]) -> None:
        self._names = tuple(sorted(x))  # type: ignore[type-var]  # River sorts them too
        n_inner = 2**self.height - 1
        feature = array("H", bytes(2 * n_inner * self.n_trees))
        threshold = array("d", bytes(8 * n_inner * self.n_trees))
        for t in range(self.n_trees):
            limits = [tuple(self.limits[name]) for name in self._names]
            self._grow(limits, self.height, 0, t * n_inner, feature, threshold)
        self._feature, self._threshold = feature, threshold
        n_nodes = self.n_trees * (2 ** (self.height + 1) - 1)
        # A mass never exceeds window_size: two bytes a node when that is enough.
        self._l_mass = _zeros(n_nodes, self.window_size)
        self._r_mass = _zeros(n_nodes, self.window_size)

    def _grow(
        self,
        limits: list[tuple[float, float]],
        height: int,
        j: int,
        base: int,
        feature: array[int],
        threshold: array[float],
    ) -> None:
        """River's ``make_padded_tree``, the same random draws in the same order, into arrays.

        Depth first (left subtree, then right), as River recurses, so that the generator is
        consumed identically; node ``j`` of the heap layout gets the split.
        """
        if height == 0:
            return
        rng = self.rng
        on = rng.choices(population=range(len(limits)), weights=[hi - lo for lo, hi in limits])[0]
        lo, hi = limits[on]
        at = rng.uniform(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo))
        feature[base + j] = on
        threshold[base + j] = at
        limits[on] = (lo, at)
        self._grow(limits, height - 1, 2 * j + 1, base, feature, threshold)
        limits[on] = (at, hi)
        self._grow(limits, height - 1, 2 * j + 2, base, feature, threshold)
        limits[on] = (lo, hi)

    def _values(self, x: dict[Hashable, Any]) -> list[Any]:
        get = x.get
        return [get(name) for name in self._names]

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        if not self._names:
            self._build(x)
        values = self._values(x)
        feature, threshold, l_mass = self._feature, self._threshold, self._l_mass
        height = self.height
        n_inner = 2**height - 1
        n_nodes = 2 * n_inner + 1
        # Node j of tree t is at g = t * n_nodes + j in the mass arrays and, when inner, at
        # k = t * n_inner + j in the split arrays; its children are at 2g + 1 - base (+1).
        for t in range(self.n_trees):
            base = t * n_nodes
            shift = t * (n_nodes - n_inner)
            step = 1 - base
            g = base
            for _ in range(height):
                l_mass[g] += 1
                k = g - shift
                value = values[feature[k]]
                if value is None:  # missing feature: follow the busier child, as River does
                    left = 2 * g + step
                    g = left + 1 if l_mass[left] < l_mass[left + 1] else left
                elif value < threshold[k]:
                    g = 2 * g + step
                else:
                    g = 2 * g + step + 1
            l_mass[g] += 1
        self.counter += 1
        if self.counter == self.window_size:
            self._r_mass = self._l_mass
            self._l_mass = _zeros(len(self._r_mass), self.window_size)
            self._first_window = False
            self.counter = 0

    def score_one(self, x: dict[Hashable, Any]) -> float:
        if self._first_window:
            return 0
        values = self._values(x)
        feature, threshold = self._feature, self._threshold
        l_mass, r_mass = self._l_mass, self._r_mass
        height = self.height
        n_inner = 2**height - 1
        n_nodes = 2 * n_inner + 1
        size_limit = 0.1 * self.window_size
        score = 0.0
        for t in range(self.n_trees):
            base = t * n_nodes
            shift = t * (n_nodes - n_inner)
            step = 1 - base
            g, depth_pow, tree_score = base, 1, 0.0
            for _ in range(height):
                r = r_mass[g]
                tree_score += r * depth_pow
                if r < size_limit:
                    break
                k = g - shift
                value = values[feature[k]]
                if value is None:
                    left = 2 * g + step
                    g = left + 1 if l_mass[left] < l_mass[left + 1] else left
                elif value < threshold[k]:
                    g = 2 * g + step
                else:
                    g = 2 * g + step + 1
                depth_pow <<= 1
            else:
                tree_score += r_mass[g] * depth_pow
            score += tree_score
        return 1 - score / self._max_score  # type: ignore[no-any-return]

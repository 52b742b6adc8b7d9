"""The 2D sheet on which the output channels of a layer are laid out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property

import torch
from torch import Tensor

BOUNDARIES = ("flat", "torus")
NEIGHBOURHOODS = ("4", "8", "gaussian")
# A Gaussian neighbourhood is cut off at this many sigmas (weight exp(-4.5) ~ 0.011 there).
GAUSSIAN_CUTOFF_SIGMAS = 3.0


def nearly_square_shape(n_units: int) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols == n_units``, ``rows <= cols`` and ``cols - rows`` smallest.

    ``250 -> (10, 25)``, ``2000 -> (40, 50)``; a prime gives a single row.
    """
    if n_units < 1:
        raise ValueError(f"a grid needs at least one unit, got n_units={n_units}")
    rows = math.isqrt(n_units)
    while n_units % rows:
        rows -= 1
    return rows, n_units // rows


class Grid:
    """Positions of ``n_units`` channels on a ``rows x cols`` sheet and who neighbours whom.

    Channel ``c`` sits at row ``c // cols``, column ``c % cols`` (row-major), so the weight
    tensor of a layer, flattened to ``(n_units, features)``, reshapes to the sheet
    ``(rows, cols, features)`` without copying.

    Distances are Euclidean in grid cells; on a torus each axis wraps around, so units at
    columns ``0`` and ``cols - 1`` are neighbours. The neighbourhood gives each pair of units a
    weight from their distance ``d > 0``:

    - ``"4"``: 1 for ``d == 1`` (left, right, up, down);
    - ``"8"``: 1 for ``d <= sqrt(2)`` (the diagonals too);
    - ``"gaussian"``: ``exp(-d**2 / (2 * sigma**2))`` for ``d <= 3 * sigma``.

    On a torus each side needs more than twice the neighbourhood radius, else a pair would
    be neighbours twice (once each way round).

    ``to_dict()`` holds everything that defines a grid; ``Grid.from_dict`` rebuilds it (profiles
    files store their layers' grids so). A layer without a topographic loss is drawn on
    ``Grid(n_units)``: its channels in order on the most nearly square factorization.

    Args:
        n_units: number of channels.
        shape: ``(rows, cols)``; ``None`` takes the most nearly square factorization.
        boundary: ``"flat"`` or ``"torus"``.
        neighbourhood: ``"4"``, ``"8"`` or ``"gaussian"``.
        sigma: width of the Gaussian neighbourhood in grid cells (ignored otherwise).
    """

    def __init__(
        self,
        n_units: int,
        shape: Sequence[int] | None = None,
        boundary: str = "flat",
        neighbourhood: str = "4",
        sigma: float = 1.0,
    ) -> None:
        if boundary not in BOUNDARIES:
            raise ValueError(f"grid boundary must be one of {BOUNDARIES}, got {boundary!r}")
        neighbourhood = str(neighbourhood)
        if neighbourhood not in NEIGHBOURHOODS:
            raise ValueError(f"grid neighbourhood must be one of {NEIGHBOURHOODS}, got {neighbourhood!r}")
        if neighbourhood == "gaussian" and not sigma > 0:
            raise ValueError(f"a gaussian neighbourhood needs sigma > 0, got sigma={sigma}")
        if shape is None:
            shape = nearly_square_shape(n_units)
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1 or shape[0] * shape[1] != n_units:
            raise ValueError(f"grid shape {list(shape)} does not hold {n_units} units: rows x cols must equal {n_units}")
        self.n_units = n_units
        self.rows, self.cols = int(shape[0]), int(shape[1])
        self.boundary = boundary
        self.neighbourhood = neighbourhood
        self.sigma = float(sigma)
        if boundary == "torus" and min(self.rows, self.cols) <= 2 * self.radius:
            raise ValueError(
                f"a {self.rows}x{self.cols} torus is too small for the {neighbourhood!r} neighbourhood "
                f"(radius {self.radius:g} cells): each side needs more than {2 * self.radius:g} units"
            )

    def __repr__(self) -> str:
        sigma = f", sigma={self.sigma:g}" if self.neighbourhood == "gaussian" else ""
        return f"Grid({self.n_units}, shape=({self.rows}, {self.cols}), boundary={self.boundary!r}, neighbourhood={self.neighbourhood!r}{sigma})"

    def to_dict(self) -> dict:
        """The grid's arguments, JSON-serializable: ``Grid.from_dict(grid.to_dict())`` is the same grid."""
        return {"n_units": self.n_units, "shape": [self.rows, self.cols], "boundary": self.boundary, "neighbourhood": self.neighbourhood, "sigma": self.sigma}

    @classmethod
    def from_dict(cls, arguments: Mapping) -> Grid:
        """The grid of :meth:`to_dict`'s output."""
        return cls(**arguments)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def radius(self) -> float:
        """The largest distance that still counts as neighbouring."""
        return {"4": 1.0, "8": math.sqrt(2.0), "gaussian": GAUSSIAN_CUTOFF_SIGMAS * self.sigma}[self.neighbourhood]

    def weight_of_distance(self, distance: Tensor) -> Tensor:
        """Neighbourhood weight of pairs at grid ``distance`` (any shape); 0 at distance 0."""
        inside = (distance > 0) & (distance <= self.radius + 1e-6)
        if self.neighbourhood == "gaussian":
            return torch.exp(-(distance**2) / (2 * self.sigma**2)) * inside
        return inside.to(distance.dtype)

    @cached_property
    def positions(self) -> Tensor:
        """``(n_units, 2)`` long tensor of ``(row, col)`` per channel."""
        units = torch.arange(self.n_units)
        return torch.stack([units // self.cols, units % self.cols], dim=1)

    @cached_property
    def distances(self) -> Tensor:
        """``(n_units, n_units)`` Euclidean grid distances (the shorter way round on a torus)."""
        steps = (self.positions[:, None, :] - self.positions[None, :, :]).abs()
        if self.boundary == "torus":
            steps = torch.minimum(steps, torch.tensor(self.shape) - steps)
        return steps.float().norm(dim=-1)

    @cached_property
    def neighbour_weights(self) -> Tensor:
        """``(n_units, n_units)`` symmetric neighbourhood weights, zero on the diagonal."""
        return self.weight_of_distance(self.distances)

    @cached_property
    def offsets(self) -> list[tuple[int, int]]:
        """Half of the neighbourhood's ``(d_row, d_col)`` steps: each unordered pair appears once.

        A step is kept if it points down, or right along the same row.
        """
        reach = math.floor(self.radius + 1e-6)
        steps = [
            (d_row, d_col)
            for d_row in range(0, reach + 1)
            for d_col in range(-reach, reach + 1)
            if d_row > 0 or d_col > 0
        ]
        lengths = torch.tensor([math.hypot(*step) for step in steps])
        return [step for step, weight in zip(steps, self.weight_of_distance(lengths).tolist()) if weight > 0]

    @cached_property
    def offset_weights(self) -> Tensor:
        """``(len(offsets),)`` neighbourhood weight of each step in :attr:`offsets`."""
        return self.weight_of_distance(torch.tensor([math.hypot(*step) for step in self.offsets], dtype=torch.float64))

    def sheet(self, vectors: Tensor) -> Tensor:
        """``(n_units, features)`` -> ``(rows, cols, features)``."""
        if vectors.shape[0] != self.n_units:
            raise ValueError(f"{self!r} lays out {self.n_units} units, got a tensor with {vectors.shape[0]}")
        return vectors.reshape(self.rows, self.cols, *vectors.shape[1:])

    @cached_property
    def degrees(self) -> Tensor:
        """``(n_units,)`` sum of each unit's neighbourhood weights."""
        return self.neighbour_sum(torch.ones(self.n_units, 1, dtype=torch.float64)).squeeze(1)

    @cached_property
    def n_pairs(self) -> float:
        """Weighted number of neighbouring pairs: the sum of the pair weights over ``i < j``."""
        return float(self.degrees.sum()) / 2

    def neighbour_sum(self, vectors: Tensor) -> Tensor:
        """``(n_units, features)`` -> ``(n_units, features)``: ``out[i] = sum_j weight(i, j) * vectors[j]``.

        The same as ``neighbour_weights @ vectors`` without the ``(n_units, n_units)`` matrix:
        for each grid step the sheet is added to itself shifted, by slicing (and, on a torus,
        a second slice for the part that wraps around), in place.
        """
        sheet = self.sheet(vectors)
        total = torch.zeros_like(sheet)
        for (d_row, d_col), weight in zip(self.offsets, self.offset_weights.tolist()):
            for first_rows, second_rows in _axis_blocks(self.rows, d_row, self.boundary == "torus"):
                for first_cols, second_cols in _axis_blocks(self.cols, d_col, self.boundary == "torus"):
                    total[first_rows, first_cols].add_(sheet[second_rows, second_cols], alpha=weight)
                    total[second_rows, second_cols].add_(sheet[first_rows, first_cols], alpha=weight)
        return total.reshape(vectors.shape)


def _axis_blocks(size: int, step: int, wrap: bool) -> list[tuple[slice, slice]]:
    """Slices ``(first, second)`` of one axis such that ``second`` holds the positions ``first + step``.

    Without ``wrap`` positions that would leave the axis are dropped; with it the part that
    wraps around comes as a second block.
    """
    if wrap:
        step %= size
        blocks = [(slice(0, size - step), slice(step, size))]
        return blocks + [(slice(size - step, size), slice(0, step))] if step else blocks
    if step >= 0:
        return [(slice(0, max(size - step, 0)), slice(step, size))]
    return [(slice(-step, size), slice(0, max(size + step, 0)))]

"""Topographic losses: make channels that are near on a :class:`Grid` alike.

Three losses share one interface (:class:`TopographicLoss`): two read the layer's weights,
one its responses during the training forward pass. :class:`TopographicRegularizer` attaches
them to named layers of any model (``Conv1d``, ``Conv2d`` or ``Linear`` weights) and sums
them with their weights and a warm-up schedule. Everything is vectorized over the
``(rows, cols, features)`` weight sheet; the only Python loops run over grid steps
(2 for a 4-neighbourhood) or layers, never over channels.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tmaps.config_types import check_config
from tmaps.topo.grid import Grid
from tmaps.topo.layers import channel_axis, filter_vectors, get_layer


class TopographicLoss(ABC):
    """A loss on one layer that is small when grid neighbours are alike.

    Args:
        grid: where the layer's output channels sit.
        weight: factor of this loss in the regularizer's total.

    ``source`` says what the loss is computed from: ``"weight"`` (called with the layer's
    weight ``(out_channels, *)``) or ``"response"`` (called with the layer's output).
    """

    name: ClassVar[str]
    source: ClassVar[str]

    def __init__(self, grid: Grid, weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError(f"{type(self).__name__} weight must be >= 0, got {weight}")
        self.grid = grid
        self.weight = float(weight)

    @abstractmethod
    def __call__(self, tensor: Tensor) -> Tensor:
        """The loss, a scalar tensor that carries gradients to ``tensor``."""


class WeightSimilarity(TopographicLoss):
    """Neighbouring filters should have similar incoming weights (topographic filter maps).

    With ``metric="cosine"``: the mean over neighbouring pairs ``(i, j)`` of
    ``1 - cos(w_i, w_j)``, where ``w_i`` is the flattened incoming weight of channel ``i``
    (``in_channels * kernel`` values). It lies in ``[0, 2]``, is 0 for identical filters and
    does not change when a filter is scaled by a positive factor. With
    ``metric="euclidean"``: the mean over pairs of ``||w_i - w_j||**2 / n_features``, which
    also pulls the filters' norms together. A Gaussian neighbourhood makes both a weighted
    mean with the grid's pair weights.

    Both are quadratic forms of the grid (``Grid.neighbour_sum``), computed in place on the
    sheet without a ``(units, units)`` matrix; their gradient is written out by hand because
    the paper-size ``conv8`` weight has 16 M values and autograd's slice-wise backward, with
    its full-size temporaries, made the loss several times slower.

    Args:
        grid: the layer's grid.
        weight: factor in the regularizer's total.
        metric: ``"cosine"`` or ``"euclidean"``.

    Shapes:
        ``loss(weight)`` takes the layer weight ``(out_channels, *)`` and returns a scalar.
    """

    name = "weight_similarity"
    source = "weight"
    METRICS = ("cosine", "euclidean")

    def __init__(self, grid: Grid, weight: float = 1.0, metric: str = "cosine") -> None:
        super().__init__(grid, weight)
        if metric not in self.METRICS:
            raise ValueError(f"WeightSimilarity metric must be one of {self.METRICS}, got {metric!r}")
        self.metric = metric

    def __call__(self, tensor: Tensor) -> Tensor:
        vectors = tensor.reshape(tensor.shape[0], -1)
        if self.metric == "cosine":
            return 1 - _GridQuadraticForm.apply(vectors, self.grid, True) / (2 * self.grid.n_pairs)
        return _GridQuadraticForm.apply(vectors, self.grid, False) / (self.grid.n_pairs * vectors.shape[1])


class _GridQuadraticForm(torch.autograd.Function):
    """``sum_i x_i . (Q x)_i`` over the rows ``x_i`` of ``vectors``.

    With ``normalize``, ``x`` are the unit-normalized rows and ``Q = A``, the grid adjacency:
    twice the weighted sum of neighbour cosines. Without, ``x`` are the raw rows and
    ``Q = diag(degrees) - A``, the grid Laplacian: the weighted sum over neighbour pairs of
    ``||x_i - x_j||**2``.
    """

    @staticmethod
    def forward(ctx, vectors: Tensor, grid: Grid, normalize: bool) -> Tensor:
        norms = torch.linalg.vector_norm(vectors, dim=1).clamp_min(NORM_FLOOR)
        rows = vectors / norms[:, None] if normalize else vectors
        image = grid.neighbour_sum(rows)
        if not normalize:
            image.neg_().addcmul_(rows, grid.degrees.to(rows.device, rows.dtype)[:, None])
        form = _row_dot(rows, image)
        ctx.normalize = normalize
        ctx.save_for_backward(rows, image, form, norms)
        return form.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:
        rows, image, form, norms = ctx.saved_tensors
        # Q is symmetric: d/dx of sum_i x_i . (Q x)_i is 2 Q x. Through x = v / |v| it loses
        # its radial part and is divided by |v|.
        gradient = image * (2 * grad_output)
        if ctx.normalize:
            gradient.addcmul_(rows, (2 * grad_output * form)[:, None], value=-1).div_(norms[:, None])
        return gradient, None, None


# Filters with a smaller norm count as zero (their direction is undefined).
NORM_FLOOR = 1e-12


def _row_dot(first: Tensor, second: Tensor) -> Tensor:
    """``(n, f), (n, f) -> (n,)`` row-wise dot products, without an ``(n, f)`` temporary."""
    return torch.bmm(first.unsqueeze(1), second.unsqueeze(2)).reshape(-1)


class ResponseCorrelation(TopographicLoss):
    """Channels should respond alike in proportion to their nearness (TDANN-style).

    The responses of each channel over a batch give a ``(units, units)`` Pearson correlation
    matrix ``R``. The loss is ``1 - pearson(R[i, j], 1 / (d_ij + 1))`` over the pairs
    ``i < j``, with ``d_ij`` their grid distance: 0 when response correlation falls off with
    distance exactly like ``1 / (d + 1)``, up to scale and offset. A Pearson target rather
    than the MSE to ``1 / (d + 1)`` leaves the overall level of correlation to the task
    (post-ReLU channels correlate positively throughout; MSE would push every far pair
    towards a fixed small correlation) and asks only for the shape of the fall-off, as in
    TDANN's relative spatial loss (Margalit et al., 2024).

    What a sample is (``samples``):

    - ``"frames"`` (default): every time step (or spatial position) of every utterance is a
      sample, e.g. ``8 x 500`` samples for a batch of eight 10 s utterances. Correlations
      then say which channels fire together in time, i.e. on the same sounds.
    - ``"utterances"``: responses are averaged over time first, one sample per utterance
      (along ``batch_axis``: 1 for the time-major ``(time, batch, units)`` outputs inside
      torchaudio's conformer and transformer blocks). With batches of 8 to 32 these
      correlations are very noisy; kept for comparison.

    Frames in the padding of shorter utterances count as samples too (the regularizer sees
    only the layer's output, not the lengths).

    Args:
        grid: the layer's grid.
        weight: factor in the regularizer's total.
        samples: ``"frames"`` or ``"utterances"``.
        max_units: above this many channels each call draws a random subset of this many
            (``max_units**2 / 2`` pairs) to bound time and memory.
        seed: seed of the subset draws (own generator: training randomness is untouched).
        batch_axis: the batch axis of the layer's output, for ``samples="utterances"``.

    Shapes:
        ``loss(activations, channel_dim=1)`` takes the layer output, e.g. ``(batch,
        channels, time)`` for a convolution or ``(batch, ..., channels)`` with
        ``channel_dim=-1`` for ``Linear`` (any order of the other axes: ``(time, batch,
        channels)`` inside a conformer block), and returns a scalar.
    """

    name = "response_correlation"
    source = "response"
    SAMPLES = ("frames", "utterances")
    # Keeps the standardization finite for channels that never respond (dead ReLUs).
    VARIANCE_FLOOR = 1e-8

    def __init__(
        self, grid: Grid, weight: float = 1.0, samples: str = "frames", max_units: int = 1024, seed: int = 0, batch_axis: int = 0
    ) -> None:
        super().__init__(grid, weight)
        if samples not in self.SAMPLES:
            raise ValueError(f"ResponseCorrelation samples must be one of {self.SAMPLES}, got {samples!r}")
        if max_units < 2:
            raise ValueError(f"ResponseCorrelation max_units must be >= 2, got {max_units}")
        self.samples = samples
        self.max_units = max_units
        self.batch_axis = batch_axis
        self._generator = torch.Generator().manual_seed(seed)
        self._target_similarity = 1 / (grid.distances + 1)

    def responses(self, activations: Tensor, channel_dim: int = 1) -> Tensor:
        """``(n_samples, channels)`` responses from a layer output (see ``samples``)."""
        responses = activations.movedim((self.batch_axis, channel_dim), (0, -1))
        if responses.shape[-1] != self.grid.n_units:
            raise ValueError(
                f"ResponseCorrelation on {self.grid!r} got activations with {responses.shape[-1]} channels "
                f"on axis {channel_dim} (shape {tuple(activations.shape)})"
            )
        if self.samples == "utterances":
            return responses.reshape(responses.shape[0], -1, responses.shape[-1]).mean(dim=1)
        return responses.reshape(-1, responses.shape[-1])

    def __call__(self, tensor: Tensor, channel_dim: int = 1) -> Tensor:
        responses = self.responses(tensor, channel_dim)
        if self._target_similarity.device != responses.device:
            self._target_similarity = self._target_similarity.to(responses.device)
        target = self._target_similarity.to(responses.dtype)
        if self.grid.n_units > self.max_units:
            units = torch.randperm(self.grid.n_units, generator=self._generator)[: self.max_units].to(responses.device)
            responses, target = responses[:, units], target[units][:, units]
        centred = responses - responses.mean(dim=0)
        standardized = centred / (centred.pow(2).mean(dim=0) + self.VARIANCE_FLOOR).sqrt()
        correlation = standardized.T @ standardized / standardized.shape[0]
        upper = torch.triu_indices(*correlation.shape, offset=1, device=correlation.device)
        return 1 - _pearson(correlation[upper[0], upper[1]], target[upper[0], upper[1]])


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    return F.cosine_similarity(x - x.mean(), y - y.mean(), dim=0)


class BlurSmoothness(TopographicLoss):
    """Each filter should match its blurred sheet (TopoLoss, Deb et al., 2025).

    The weight sheet ``(rows, cols, features)`` is shrunk by ``factor`` per axis (area
    averaging, ``F.interpolate(mode="area")``) and stretched back (bilinear,
    ``align_corners=False``); the loss is the mean over channels of ``1 - cos(w_i, b_i)``
    with ``b_i`` the blurred filter. Only what varies faster on the sheet than the coarse
    grid can hold is penalized. The blur does not wrap around, so a torus grid is refused.

    Both resamplings are separable and linear, so the blur is one ``rows x rows`` and one
    ``cols x cols`` matrix (built by resampling the identity with ``F.interpolate``) applied
    as two matrix products to the sheet in its natural ``(rows, cols, features)`` layout; the
    gradient is written out by hand (see :class:`WeightSimilarity` for why).

    Args:
        grid: the layer's grid (flat).
        weight: factor in the regularizer's total.
        factor: shrink factor ``(rows, cols)``, or one number for both; each at least 1 and
            at most the side it shrinks.

    Shapes:
        ``loss(weight)`` takes the layer weight ``(out_channels, *)`` and returns a scalar.
    """

    name = "blur_smoothness"
    source = "weight"

    def __init__(self, grid: Grid, weight: float = 1.0, factor: float | Sequence[float] = 2.0) -> None:
        super().__init__(grid, weight)
        if grid.boundary != "flat":
            raise ValueError(f"BlurSmoothness blurs a flat sheet; got {grid!r}")
        factors = (float(factor),) * 2 if isinstance(factor, (int, float)) else tuple(float(f) for f in factor)
        if len(factors) != 2 or any(not 1 <= f <= side for f, side in zip(factors, grid.shape)):
            raise ValueError(
                f"BlurSmoothness factor must be one number or (rows, cols), each in [1, side] of {grid!r}; got {factor!r}"
            )
        self.factor = factors
        self.coarse_shape = tuple(max(1, round(side / f)) for side, f in zip(grid.shape, factors))
        self.row_blur, self.col_blur = (
            _blur_matrix(side, coarse) for side, coarse in zip(grid.shape, self.coarse_shape)
        )

    def blur(self, tensor: Tensor) -> Tensor:
        """``(out_channels, *)`` weight -> ``(out_channels, features)`` blurred filters."""
        vectors = tensor.reshape(tensor.shape[0], -1)
        return _blur_sheet(vectors, *self._operators(vectors))

    def _operators(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        return self.row_blur.to(vectors.device, vectors.dtype), self.col_blur.to(vectors.device, vectors.dtype)

    def __call__(self, tensor: Tensor) -> Tensor:
        vectors = tensor.reshape(tensor.shape[0], -1)
        return 1 - _BlurCosine.apply(vectors, *self._operators(vectors))


def _blur_matrix(side: int, coarse: int) -> Tensor:
    """``(side, side)`` float64 matrix of 1D area shrinking to ``coarse`` then linear stretching back."""
    identity = torch.eye(side, dtype=torch.float64).unsqueeze(0)
    shrunk = F.interpolate(identity, size=coarse, mode="area")
    # Row j of the result is the blur of the unit vector e_j: the transpose of the operator.
    return F.interpolate(shrunk, size=side, mode="linear", align_corners=False)[0].T


def _blur_sheet(vectors: Tensor, row_blur: Tensor, col_blur: Tensor) -> Tensor:
    """``(rows * cols, f)`` -> blurred along rows then columns of the ``(rows, cols, f)`` sheet."""
    rows, cols = len(row_blur), len(col_blur)
    along_rows = (row_blur @ vectors.reshape(rows, -1)).reshape(rows, cols, -1)
    return torch.matmul(col_blur, along_rows).reshape(vectors.shape)


class _BlurCosine(torch.autograd.Function):
    """Mean over rows of ``cos(v_i, (B v)_i)`` with ``B`` the separable blur of the sheet."""

    @staticmethod
    def forward(ctx, vectors: Tensor, row_blur: Tensor, col_blur: Tensor) -> Tensor:
        blurred = _blur_sheet(vectors, row_blur, col_blur)
        norms = torch.linalg.vector_norm(vectors, dim=1).clamp_min(NORM_FLOOR)
        blurred_norms = torch.linalg.vector_norm(blurred, dim=1).clamp_min(NORM_FLOOR)
        cosines = _row_dot(vectors, blurred) / (norms * blurred_norms)
        ctx.save_for_backward(vectors, blurred, norms, blurred_norms, cosines, row_blur, col_blur)
        return cosines.mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:
        vectors, blurred, norms, blurred_norms, cosines, row_blur, col_blur = ctx.saved_tensors
        scale = grad_output / len(cosines)
        cross = (scale / (norms * blurred_norms))[:, None]
        # cos(v, b) changes with v directly and through b = B v; first the direct part ...
        gradient = torch.mul(blurred, cross).addcmul_(vectors, (scale * cosines / norms**2)[:, None], value=-1)
        # ... then d cos / d b, sent back through B (its two factors commute, so the order is free).
        through_blur = torch.mul(blurred, (-scale * cosines / blurred_norms**2)[:, None]).addcmul_(vectors, cross)
        rows, cols = len(row_blur), len(col_blur)
        along_cols = torch.matmul(col_blur.T, through_blur.reshape(rows, cols, -1))
        gradient.reshape(rows, -1).addmm_(row_blur.T, along_cols.reshape(rows, -1))
        return gradient, None, None


LOSSES: dict[str, type[TopographicLoss]] = {
    loss.name: loss for loss in (WeightSimilarity, ResponseCorrelation, BlurSmoothness)
}


class TopographicRegularizer:
    """Topographic losses attached to named layers of a model.

    Weight losses read the layer's weight when :meth:`loss` is called. Response losses read
    the layer's output of the last forward pass that tracked gradients, caught by a forward
    hook (no second forward pass); the hook keeps nothing while gradients are off, so
    validation passes cost nothing. Gradients of a response loss reach the layer and every
    layer before it.

    Args:
        model: any ``nn.Module``.
        terms: layer name (``model.get_submodule`` path) -> the losses on that layer.
        warmup_steps: the losses' weights grow linearly from 0 at step 0 to full at this step;
            0 applies them fully from the start.

    Not an ``nn.Module`` on purpose: it holds no parameters, and registering it inside a
    LightningModule must not duplicate the model in the state dict.
    """

    def __init__(self, model: nn.Module, terms: Mapping[str, Sequence[TopographicLoss]], warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.layers = {name: get_layer(model, name) for name in terms}
        self.terms = {name: list(losses) for name, losses in terms.items()}
        for name, losses in self.terms.items():
            n_channels = filter_vectors(self.layers[name]).shape[0]
            for loss in losses:
                if loss.grid.n_units != n_channels:
                    raise ValueError(f"layer {name!r} has {n_channels} output channels but its {loss.name} grid is {loss.grid!r}")
            names = [loss.name for loss in losses]
            if len(set(names)) != len(names):
                raise ValueError(f"layer {name!r} has the same loss twice: {names}")
        self._activations: dict[str, Tensor] = {}
        self._hooks = [
            self.layers[name].register_forward_hook(self._keep_activations(name))
            for name, losses in self.terms.items()
            if any(loss.source == "response" for loss in losses)
        ]

    def _keep_activations(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if torch.is_grad_enabled():
                self._activations[name] = output

        return hook

    @property
    def layer_names(self) -> list[str]:
        return list(self.terms)

    @property
    def grids(self) -> dict[str, Grid]:
        """Each layer's grid (that of its first loss)."""
        return {name: losses[0].grid for name, losses in self.terms.items() if losses}

    def scale(self, step: int) -> float:
        """The warm-up factor of the loss weights at ``step``."""
        return 1.0 if self.warmup_steps == 0 else min(1.0, step / self.warmup_steps)

    def loss(self, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, terms)`` at training ``step``.

        ``total`` is ``scale(step) * sum(loss.weight * value)``, with gradients; ``terms``
        maps ``"<layer>/<loss name>"`` to each unweighted value, detached, for logging.
        Response losses use (and then drop) the activations of the last forward pass.
        """
        scale = self.scale(step)
        weighted, terms = [], {}
        for name, losses in self.terms.items():
            layer = self.layers[name]
            for loss in losses:
                if loss.source == "response":
                    if name not in self._activations:
                        raise RuntimeError(
                            f"{loss.name} on layer {name!r} has no activations: call the model's forward "
                            "(with gradients enabled) before regularizer.loss()"
                        )
                    value = loss(self._activations[name], channel_dim=channel_axis(layer))
                else:
                    value = loss(filter_vectors(layer))
                weighted.append(loss.weight * value)
                terms[f"{name}/{loss.name}"] = value.detach()
        self._activations.clear()
        return scale * torch.stack(weighted).sum(), terms

    def remove(self) -> None:
        """Drop the forward hooks; the regularizer cannot compute response losses afterwards."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._activations.clear()


GRID_KEYS = ("shape", "boundary", "neighbourhood", "sigma")


@dataclass(frozen=True)
class TopoConfig:
    """A topographic loss on some layers: the ``topo`` config group (``conf/topo/*.yaml``), typed.

    >>> regularizer = build_regularizer(model, TopoConfig(layers=["conv2"], loss="weight_similarity"))
    >>> topo_loss, terms = regularizer.loss(step)     # add topo_loss to the task loss

    Attributes:
        layers: ``model.get_submodule`` names; none: no topographic loss.
        loss: a key of :data:`LOSSES` (``weight_similarity``, ``response_correlation``,
            ``blur_smoothness``).
        weight: the loss's factor in the total.
        warmup_steps: the weight grows linearly from 0 to full over this many steps.
        grid: :class:`Grid` arguments besides ``n_units`` (``shape``, ``boundary``,
            ``neighbourhood``, ``sigma``); every layer gets a grid of its own channels.
        options: further keyword arguments of the loss class (e.g. ``{"metric": "cosine"}``).
    """

    layers: Sequence[str]
    loss: str
    weight: float = 1.0
    warmup_steps: int = 0
    grid: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "grid", dict(self.grid or {}))
        object.__setattr__(self, "options", dict(self.options or {}))
        if self.loss not in LOSSES:
            raise ValueError(f"topo.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        unknown = sorted(set(self.grid) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"topo.grid has unknown keys {unknown}; known: {list(GRID_KEYS)}")
        accepted = [name for name in inspect.signature(LOSSES[self.loss]).parameters if name not in ("grid", "weight")]
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ValueError(f"topo.options {unknown} are not options of {self.loss}; it takes {accepted}")

    @classmethod
    def from_dict(cls, config: Mapping) -> TopoConfig:
        """The config of a plain mapping; a key it does not take, or a value of the wrong type, is a ``ConfigTypeError`` naming it."""
        return cls(**{"loss": None, **check_config(config, cls, "topo")})


def _typed(config: TopoConfig | Mapping | None) -> TopoConfig | None:
    """``config`` as a ``TopoConfig``; ``None`` when it selects no layers."""
    if not config:
        return None
    if not isinstance(config, TopoConfig):
        if not config.get("layers"):
            return None
        config = TopoConfig.from_dict(config)
    return config if config.layers else None


def build_regularizer(model: nn.Module, config: TopoConfig | Mapping | None) -> TopographicRegularizer | None:
    """The regularizer of a :class:`TopoConfig` (or the same as a plain mapping), or ``None`` when it selects no layers.

    As a mapping (see ``conf/topo/*.yaml``)::

        layers: [conv2, conv3]        # model.get_submodule names; [] -> None
        loss: weight_similarity       # weight_similarity | response_correlation | blur_smoothness
        weight: 1.0
        warmup_steps: 0
        grid: {shape: null, boundary: flat, neighbourhood: "4", sigma: 1.0}
        options: {metric: cosine}     # keyword arguments of the loss class

    Each layer gets its own grid with the layer's number of output channels.
    """
    config = _typed(config)
    if config is None:
        return None
    loss_class = LOSSES[config.loss]
    terms = {name: [loss_class(grid, weight=config.weight, **config.options)] for name, grid in topographic_grids(model, config).items()}
    return TopographicRegularizer(model, terms, warmup_steps=config.warmup_steps)


def topographic_grids(model: nn.Module, config: TopoConfig | Mapping | None) -> dict[str, Grid]:
    """The grid of every layer of a topographic config (see :func:`build_regularizer`) on ``model``.

    The one place where a config becomes grids: the regularizer trains on these, and a
    checkpoint's grids are these of its stored ``topo`` config. ``{}`` without layers.
    """
    config = _typed(config)
    if config is None:
        return {}
    grids = {}
    for name in config.layers:
        n_channels = filter_vectors(get_layer(model, name)).shape[0]
        try:
            grids[name] = Grid(n_channels, **config.grid)
        except ValueError as error:
            raise ValueError(f"topo.grid for layer {name!r}: {error}") from None
    return grids

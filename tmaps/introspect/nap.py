"""The profiler: hooks on named layers, their frame maps, and one streamed pass of an attribution.

A profile is, for each group of inputs (phoneme, character, word, speaker, ...) and each unit of
a layer, the mean over the frames of that group of an attribution (``tmaps.introspect.attribution``),
minus the mean over groups: the layer's activation gives neuron activation profiles (NAPs),
activation x gradient gives GradNAPs. All layers come from one pass; the statistics are
gathered by ``tmaps.introspect.accumulate`` and kept in ``tmaps.introspect.profiles.Profiles``.

Plain PyTorch/NumPy: works on any ``nn.Module``. ``layers`` are module names
(``model.get_submodule``); a layer's output is read by an ``OutputAdapter``
(``tmaps.introspect.adapters``): the tensor of a tuple or dataclass output, its batch and time
axes (probed on the first batch, or declared), the other axes as units. ``(batch, units,
time)`` convolution outputs, ``(batch, time, units)`` and ``(time, batch, units)`` transformer
outputs all work; 2-d ``(batch, units)`` outputs give one frame per utterance
(utterance-level groupings only).

Frames are matched to segments as described in ``tmaps.introspect.frames``. Whether the padding
reached the valid frames depends on the model: the pass checks it on its first padded batch,
and ``exact=True`` runs utterances without padding (``tmaps.introspect.padding``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import tmaps
from tmaps.introspect.accumulate import Accumulator
from tmaps.introspect.adapters import FEATURES, Axes, ModelInput, OutputAdapter, read_axes
from tmaps.introspect.attribution import Activation, Attribution, GradientXActivation, OnOutput
from tmaps.introspect.forward import ForwardFn, default_forward, evaluating, to_model_device
from tmaps.introspect.frames import FrameMap, TimeAxisProbe
from tmaps.introspect.groups import Alignments, Grouping, resolve_grouping
from tmaps.introspect.padding import PaddingCheck, is_padded, unpadded
from tmaps.introspect.profiles import NORMALIZATIONS, Profiles
from tmaps.progress import progress_bar


class Profiler:
    """Profiles of an attribution over named layers of any ``nn.Module``.

    Args:
        model: the network; it runs in eval mode during ``compute`` (its mode is restored).
        layers: module names (``model.get_submodule``), e.g. ``["conv0", "conv5"]`` for
            ``tmaps.models.Wav2Letter`` or ``["acoustic_model.1"]`` (a ReLU) for torchaudio's.
        attribution: what is profiled (``tmaps.introspect.attribution``): ``Activation()``
            (NAPs, the default), ``GradientXActivation(...)`` (GradNAPs), or
            ``ATTRIBUTIONS[kind]()`` by config name.
        forward: ``(model, batch) -> log_probs (B, T', C)`` or ``(log_probs, output_lengths)``
            to run models that ``default_forward`` does not cover
            (``tmaps.introspect.adapters.waveform_forward`` for waveform models).
        frame_rate: input frames per second along the input's last axis
            (``tmaps.data.features.FRAME_RATE``, 100, for log-mel; 16000 for waveforms).
        exact: run every utterance alone, without padding (one forward pass per utterance:
            slower, by about the batch size on a GPU), for models that let padding reach valid
            frames. By default batches run as they come, and the first padded batch checks
            that the model is padding-invariant (``tmaps.introspect.padding``): its shortest
            utterance runs once more alone, and if any layer's valid frames differ by more
            than float noise, a warning says so. ``Profiles.info`` records ``exact``,
            ``padding_invariant`` (``None`` when no batch was padded, or in exact mode) and
            ``padding_differences`` (per layer, the largest difference relative to the layer's
            largest activation). ``tmaps.models.Wav2Letter`` masks its padding; a plain stack
            of padded convolutions such as torchaudio's ``Wav2Letter`` does not. The check runs
            on log-mel batches whose layers all have the batch first and time last.
        adapters: layer -> ``OutputAdapter`` for layers whose output is a tuple or dataclass,
            or whose axes must be declared; other layers are probed.
        inputs: the batch keys of the model input and its lengths (``FEATURES`` or ``WAVEFORM``).

    Example:
        >>> profiles = Profiler(model, ["conv2", "conv5"], GradientXActivation(target="predicted")).compute(loader, "phoneme")
        >>> profiles["conv5"].mean.shape       # (groups, units)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | str,
        attribution: Attribution | None = None,
        forward: ForwardFn | None = None,
        frame_rate: float = 100.0,
        exact: bool = False,
        adapters: Mapping[str, OutputAdapter] | None = None,
        inputs: ModelInput = FEATURES,
    ) -> None:
        if attribution is not None and not isinstance(attribution, Attribution):
            raise ValueError(f"attribution must be an Attribution instance such as ATTRIBUTIONS['gradnap'](), got {attribution!r}")
        self.model = model
        self.attribution = attribution or Activation()
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        names = [name for name, _ in model.named_modules() if name]
        unknown = [layer for layer in self.layers if layer not in names]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of {type(model).__name__}; its modules are {names}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers are listed more than once: {self.layers}")
        undeclared = sorted(set(adapters or {}) - set(self.layers))
        if undeclared:
            raise ValueError(f"adapters are given for {undeclared}, which are not among the layers {self.layers}")
        if exact and inputs != FEATURES:
            raise ValueError(f"exact=True cuts log-mel batches to each utterance's length; inputs {inputs} are not supported")
        self.forward = forward or default_forward
        self.frame_rate = frame_rate
        self.exact = exact
        self.adapters = {layer: (adapters or {}).get(layer, OutputAdapter()) for layer in self.layers}
        self.inputs = inputs
        self._frame_maps: dict[str, FrameMap] = {}
        self._axes: dict[str, Axes] = {}

    def _info(self) -> dict:
        model = type(self.model)
        info = {"kind": self.attribution.kind, "model": f"{model.__module__}.{model.__qualname__}", "tmaps_version": tmaps.__version__}
        return info | self.attribution.info()

    def compute(
        self,
        loader: Iterable[Mapping],
        groups: str | Grouping,
        window: int | None = None,
        normalize: str | None = "center",
    ) -> Profiles:
        """Profiles of every layer over ``loader`` in one pass.

        Args:
            loader: batches as in docs/design.md (``features``, ``feature_lengths``,
                ``records``; ``targets`` and ``target_lengths`` for aligned targets).
            groups: a built-in grouping name, a record field, or a ``Grouping``
                (see ``tmaps.introspect.groups``).
            window: ``w`` for time-resolved profiles over offsets ``-w..w`` layer frames around
                each segment's onset (frames outside the utterance are not counted, so counts
                are per offset); ``None`` for the mean over all frames of the segments.
            normalize: ``"center"``, ``"zscore"`` or ``None`` (see ``Profiles``).
        """
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        grouping = resolve_grouping(groups)
        accumulator = Accumulator(grouping, window, self.frame_rate)
        self._frame_maps, self._axes = {}, {}
        padding: dict = {"exact": self.exact, "padding_invariant": None}
        with evaluating(self.model):
            for batch in progress_bar(loader, f"{self.attribution.kind} pass"):
                batch = to_model_device(self.model, batch)
                for part in unpadded(batch) if self.exact else [batch]:
                    accumulator.start_batch(part["records"], part[self.inputs.lengths_key])
                    # The frame maps come from the first batch; later batches skip the probe's hooks.
                    probe = TimeAxisProbe(self.model) if not self._frame_maps else None
                    checking = padding["padding_invariant"] is None and not self.exact and self.inputs == FEATURES and is_padded(part)
                    check = PaddingCheck(self.model, self.layers, part) if checking else None
                    with probe or contextlib.nullcontext(), check or contextlib.nullcontext():
                        self._run_batch(part, accumulator, probe)
                    if check is not None and self._readable_by_padding_check():
                        padding |= self._padding_invariance(check)
        info = {
            **self._info(),
            "grouping": grouping.name,
            "frame_level": grouping.frame_level,
            "frame_maps": {layer: frame_map.as_dict() for layer, frame_map in self._frame_maps.items()},
            **padding,
        }
        return accumulator.profiles(self.layers, normalize, info)

    def _padding_invariance(self, check: PaddingCheck) -> dict:
        """``padding_invariant`` and ``padding_differences`` from a padded batch; a warning when padding leaks."""
        differences = check.differences(self.forward)
        tolerance = check.tolerance()
        leaking = {layer: difference for layer, difference in differences.items() if difference > tolerance}
        if leaking:
            worst = max(leaking, key=leaking.get)
            warnings.warn(
                f"{type(self.model).__name__} is not padding-invariant: the shortest utterance of the first padded batch "
                f"gives other values alone than inside the batch in layers {sorted(leaking)} (up to {leaking[worst]:.1%} of "
                f"the largest activation, in {worst!r}), so these profiles depend on how utterances are batched. "
                f"{type(self).__name__}(..., exact=True) runs every utterance alone, without padding (slower).",
                stacklevel=3,
            )
        return {"padding_invariant": not leaking, "padding_differences": differences}

    def _frame_map(self, layer: str, n_input_frames: int, n_frames: int, probe: TimeAxisProbe | None) -> FrameMap:
        if layer not in self._frame_maps:
            if probe is None:
                raise RuntimeError(f"layer {layer!r} did not run in the first batch, so its frames cannot be placed in time")
            self._frame_maps[layer] = probe.frame_map(n_input_frames, n_frames)
        return self._frame_maps[layer]

    def _readable_by_padding_check(self) -> bool:
        """Whether ``PaddingCheck`` reads every layer right: batch first and time last."""
        return all(axes.conv_convention for axes in self._axes.values())

    def _n_input_frames(self, batch: Mapping) -> int:
        return batch[self.inputs.key].shape[-1]

    def _place(self, layer: str, activation: Tensor, batch: Mapping, probe: TimeAxisProbe | None) -> None:
        """Fix the layer's axes and frame map on the first batch, from its output and the calls the probe recorded so far."""
        if layer in self._axes and layer in self._frame_maps:
            return
        if probe is None:
            raise RuntimeError(f"layer {layer!r} did not run in the first batch, so its axes and frames cannot be probed")
        if layer not in self._axes:
            lengths = probe.lengths(self._n_input_frames(batch))
            module = self.model.get_submodule(layer)
            self._axes[layer] = read_axes(layer, module, activation, self.adapters[layer], len(batch["records"]), lengths)
        n_frames = self._axes[layer].units_by_time(activation).shape[-1]
        self._frame_map(layer, self._n_input_frames(batch), n_frames, probe)

    def _accumulate(self, layer: str, values: Tensor, accumulator: Accumulator) -> None:
        """Add a layer's attributions, shaped like its output and placed by ``_place``."""
        values = self._axes[layer].units_by_time(values)
        if accumulator.grouping.frame_level and self._axes[layer].time is None:
            raise ValueError(f"layer {layer!r} has no time axis; use an utterance-level grouping (a record field) for it")
        accumulator.add(layer, values, self._frame_maps[layer])

    def _hook_layers(self, on_output: Callable[[str, Any], Any]) -> list[torch.utils.hooks.RemovableHandle]:
        """Forward hooks calling ``on_output(layer, output)``; a layer that runs twice in one pass is an error."""
        calls = dict.fromkeys(self.layers, 0)

        def hook(layer: str) -> Callable:
            def run(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
                calls[layer] += 1
                if calls[layer] > 1:
                    raise ValueError(f"layer {layer!r} runs more than once per forward pass; profile a module that runs once")
                return on_output(layer, output)

            return run

        return [self.model.get_submodule(layer).register_forward_hook(hook(layer)) for layer in self.layers]

    def _run_batch(self, batch: Mapping, accumulator: Accumulator, probe: TimeAxisProbe | None) -> None:
        self.attribution.attribute(_BatchRun(self, batch, probe), lambda layer, values: self._accumulate(layer, values, accumulator))


class _BatchRun:
    """One batch of a ``Profiler`` pass, as an attribution sees it (``tmaps.introspect.attribution.LayerRun``)."""

    def __init__(self, profiler: Profiler, batch: Mapping, probe: TimeAxisProbe | None) -> None:
        self.profiler = profiler
        self.batch = batch
        self.probe = probe
        self.layers = profiler.layers
        self.frame_rate = profiler.frame_rate

    def forward(self, on_output: OnOutput) -> Tensor | tuple:
        profiler = self.profiler

        def read(layer: str, output: Any) -> Any:
            activation = profiler.adapters[layer].select(layer, output)
            # The layer's frame map must come from the calls recorded up to this layer.
            profiler._place(layer, activation, self.batch, self.probe)
            replacement = on_output(layer, activation)
            return None if replacement is None else profiler.adapters[layer].replace(output, replacement)

        handles = profiler._hook_layers(read)
        try:
            return profiler.forward(profiler.model, self.batch)
        finally:
            for handle in handles:
                handle.remove()

    def output_frame_map(self, n_output_frames: int) -> FrameMap:
        return self.profiler._frame_map("<output>", self.profiler._n_input_frames(self.batch), n_output_frames, self.probe)


class NAP(Profiler):
    """Neuron activation profiles: a :class:`Profiler` of :class:`~tmaps.introspect.attribution.Activation`.

    Example:
        >>> profiles = NAP(model, ["conv2", "conv5"]).compute(loader, "phoneme")
        >>> profiles["conv5"].mean.shape       # (groups, units)
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str, **options: Any) -> None:
        super().__init__(model, layers, Activation(), **options)


class GradNAP(Profiler):
    """Gradient profiles: a :class:`Profiler` of :class:`~tmaps.introspect.attribution.GradientXActivation`.

    ``target``, ``multiply_by_activation`` and ``alignments`` are the attribution's; the other
    options the profiler's.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | str,
        target: str = "aligned",
        multiply_by_activation: bool = True,
        alignments: Alignments | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, layers, GradientXActivation(target, multiply_by_activation, alignments), **options)

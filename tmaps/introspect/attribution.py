"""Attribution methods: what a profile averages per group, kept apart from the aggregation.

An attribution turns one batch into a value per unit and frame of each profiled layer's
output, shaped like that output; the profiler (``tmaps.introspect.nap.Profiler``) places the
values in time and the accumulator (``tmaps.introspect.accumulate``) averages them per group,
whatever the method. As in Captum, each method is a class:

- :class:`Activation`: the layer's output itself, giving neuron activation profiles (NAPs);
- :class:`GradientXActivation`: activation x gradient of the target log-probability (or the
  gradient alone), giving GradNAPs.

A gradient-based method (e.g. integrated gradients) subclasses :class:`GradientAttribution`,
which provides the layers' activations with gradients and the objective, and implements
``attribute``; it is registered in :data:`ATTRIBUTIONS` under its config name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tmaps.introspect.forward import model_outputs
from tmaps.introspect.frames import FrameMap
from tmaps.introspect.groups import Alignments, CharacterGrouping

TARGETS = ("aligned", "predicted")

OnOutput = Callable[[str, Tensor], "Tensor | None"]
Emit = Callable[[str, Tensor], None]


class LayerRun(Protocol):
    """One batch as the profiler runs it, offered to an attribution."""

    batch: Mapping
    layers: list[str]
    frame_rate: float

    def forward(self, on_output: OnOutput) -> Tensor | tuple:
        """Run the model on the batch, calling ``on_output(layer, activation)`` as each layer runs.

        A tensor returned by ``on_output`` replaces the layer's activation in the rest of the pass.
        """

    def output_frame_map(self, n_output_frames: int) -> FrameMap:
        """Where the model's output frames lie in the input."""


class Attribution(ABC):
    """A method giving each unit's value at each frame of the profiled layers.

    ``kind`` names the profiles it gives (``Profiles.info["kind"]``); ``info`` adds its options.
    """

    kind: str

    def info(self) -> dict:
        return {}

    @abstractmethod
    def attribute(self, run: LayerRun, emit: Emit) -> None:
        """Call ``emit(layer, values)`` once for every layer of ``run``, ``values`` shaped like its output."""


class Activation(Attribution):
    """The layer's output: neuron activation profiles (NAPs)."""

    kind = "NAP"

    def attribute(self, run: LayerRun, emit: Emit) -> None:
        # Emitting inside the hook reads each output before any later in-place operation
        # (torchaudio's ReLU(inplace=True)) can change it, and frees it right away.
        with torch.no_grad():
            run.forward(emit)


class GradientAttribution(Attribution):
    """The base of gradient-based methods: the objective ``J_b`` and the activations it is differentiated by.

    For utterance ``b`` with per-frame targets ``y[b, t]`` the objective is the summed
    log-probability of the targets over its valid output frames,
    ``J_b = sum_{t < T'_b} log_probs[b, t, y[b, t]]``. Utterances do not interact in eval
    mode, so one backward pass of ``sum_b J_b`` serves the whole batch.

    Args:
        target: ``"aligned"``: the character aligned to each output frame, from the records'
            ``characters`` segments (forced alignment) or, without them, their ``words``
            spread evenly over the characters (``CharacterGrouping``); frames that no
            character covers target the blank. Characters become classes by pairing each
            record's ``text`` with the batch's ``targets``. ``"predicted"``: the most probable
            class of each frame (argmax).
        alignments: character segments by record id for ``"aligned"`` targets
            (``tmaps.introspect.alignment.align``), used instead of the records' own.
    """

    def __init__(self, target: str = "aligned", alignments: Alignments | None = None) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.characters = CharacterGrouping(alignments=alignments)

    def info(self) -> dict:
        return {"target": self.target}

    def frame_targets(self, batch: Mapping, log_probs: Tensor, output_lengths: Tensor, output_map: FrameMap, frame_rate: float) -> Tensor:
        """Target class of every output frame ``(B, T')`` (see ``target``); ``frame_rate`` is the input's."""
        if self.target == "predicted":
            return log_probs.detach().argmax(dim=-1)
        targets = torch.zeros(log_probs.shape[:2], dtype=torch.long)
        for b, record in enumerate(batch["records"]):
            classes = batch["targets"][b, : batch["target_lengths"][b]].tolist()
            if len(classes) != len(record["text"]):
                raise ValueError(
                    f"record {record.get('id')!r}: its text has {len(record['text'])} characters but the batch has "
                    f"{len(classes)} targets for it, so characters cannot be paired with classes"
                )
            class_of = dict(zip(record["text"], classes))
            segments = self.characters.segments(record)
            first, stop = output_map.segment_frames([s[1] for s in segments], [s[2] for s in segments], frame_rate)
            length = int(output_lengths[b])
            for (char, _, _), start, end in zip(segments, np.clip(first, 0, length), np.clip(stop, 0, length)):
                if char not in class_of:
                    raise ValueError(f"record {record.get('id')!r}: aligned character {char!r} is not in its text {record['text']!r}")
                targets[b, start:end] = class_of[char]
        return targets.to(log_probs.device)

    def layer_activations(self, run: LayerRun) -> tuple[dict[str, Tensor], Tensor | tuple]:
        """One forward pass with gradients: every layer's output (a tensor that gradients reach) and the model's result."""
        activations: dict[str, Tensor] = {}

        def keep(layer: str, activation: Tensor) -> Tensor:
            if not activation.requires_grad:  # frozen parameters: make the activation a leaf
                activation = activation.detach().requires_grad_()
            activations[layer] = activation
            # Like Captum, later layers get a copy, so that their in-place operations leave
            # the kept activation (and the gradient with respect to it) alone.
            return activation.clone()

        with torch.enable_grad():
            result = run.forward(keep)
        return activations, result

    def objective(self, run: LayerRun, result: Tensor | tuple) -> Tensor:
        """``sum_b J_b``: the summed log-probability of every utterance's frame targets over its valid output frames."""
        output_map = run.output_frame_map((result[0] if isinstance(result, tuple) else result).shape[1])
        log_probs, output_lengths = model_outputs(result, run.batch, output_map)
        targets = self.frame_targets(run.batch, log_probs, output_lengths, output_map, run.frame_rate)
        valid = torch.arange(log_probs.shape[1], device=log_probs.device) < output_lengths[:, None].to(log_probs.device)
        selected = log_probs.gather(-1, targets[..., None]).squeeze(-1)
        return torch.where(valid, selected, torch.zeros_like(selected)).sum()


class GradientXActivation(GradientAttribution):
    """Activation x gradient of the objective (or the gradient alone): GradNAPs.

    The value of unit ``u`` at layer frame ``s`` is ``dJ_b / da[b, u, s] * a[b, u, s]``
    (``multiply_by_activation``) or ``dJ_b / da[b, u, s]``. Because convolutions mix frames,
    ``dJ_b / da[b, u, s]`` collects the contributions of every output frame whose receptive
    field holds ``s``: it measures how the unit at that moment supports the transcription of
    the whole utterance, not only of the output frame above it. This is exactly Captum's
    ``LayerGradientXActivation`` (or ``LayerGradient``) with a forward function that returns
    ``J_b`` per example.

    Args:
        target, alignments: as for :class:`GradientAttribution`.
        multiply_by_activation: profile activation x gradient (``True``) or the gradient.
    """

    kind = "GradNAP"

    def __init__(self, target: str = "aligned", multiply_by_activation: bool = True, alignments: Alignments | None = None) -> None:
        super().__init__(target, alignments)
        self.multiply_by_activation = multiply_by_activation

    def info(self) -> dict:
        return {**super().info(), "multiply_by_activation": self.multiply_by_activation}

    def attribute(self, run: LayerRun, emit: Emit) -> None:
        activations, result = self.layer_activations(run)
        gradients = torch.autograd.grad(self.objective(run, result), [activations[layer] for layer in run.layers], allow_unused=True)
        for layer, gradient in zip(run.layers, gradients):
            activation = activations[layer].detach()
            gradient = torch.zeros_like(activation) if gradient is None else gradient
            emit(layer, gradient * activation if self.multiply_by_activation else gradient)


# The attribution methods by their config name (``kind=nap`` or ``kind=gradnap``).
ATTRIBUTIONS: dict[str, type[Attribution]] = {"nap": Activation, "gradnap": GradientXActivation}

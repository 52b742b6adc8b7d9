"""``ASRModule``: an acoustic model (``tmaps.models``) + CTC as a LightningModule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypedDict, get_args

import pytorch_lightning as pl
import torch
from pydantic import Field
from torch import Tensor, nn
from torchmetrics import MetricCollection, MinMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from tmaps.checkpoint import read_checkpoint
from tmaps.inference.decoding import GreedyDecoder
from tmaps.models import build_model, model_config
from tmaps.text import BLANK, Alphabet
from tmaps.topo import build_regularizer, topography_metrics, untouched_participation_ratio
from tmaps.training.loggers import log_table

Schedule = Literal["constant", "cosine", "onecycle"]
SCHEDULES = get_args(Schedule)
ONECYCLE_START_DIVISOR = 25.0  # a one-cycle starts at the peak rate over this (OneCycleLR's default)


class OptimConfig(TypedDict, total=False):
    """The ``optim`` config group: the keys and types ``ASRModule`` reads (see its ``optim`` argument)."""

    lr: Annotated[float, Field(ge=0)]  # what the optimizers take; a negative rate would climb the loss
    weight_decay: Annotated[float, Field(ge=0)]
    betas: Sequence[float]
    schedule: Schedule
    warmup_steps: int
    min_lr_ratio: float
    lr_decay_per_layer: float


class ASRModule(pl.LightningModule):
    """Trains an acoustic model of ``tmaps.models`` with CTC and reports WER/CER.

    Args:
        model: the model config (:func:`~tmaps.models.build_model`): ``arch`` (``wav2letter``
            when absent) and the constructor arguments except ``n_features`` and ``n_classes``,
            which follow from ``features["n_mels"]`` and the alphabet.
        alphabet: the output characters (``Alphabet.chars``); class 0 is the CTC blank.
        features: the feature config of the data (stored so a checkpoint rebuilds its inputs).
        optim: ``lr``, ``weight_decay``, ``betas``, ``schedule`` (``constant``, ``cosine`` or ``onecycle``,
            see :func:`learning_rate_scheduler`), ``warmup_steps``, ``min_lr_ratio``, and optionally
            ``lr_decay_per_layer`` (discriminative learning rates: layer ``i`` of ``n`` gets
            ``lr * decay ** (n - 1 - i)``, the head the full rate).
        topo: the ``topo`` config group (see :func:`tmaps.topo.build_regularizer`); ``None``
            or an empty layer list trains without a topographic loss.
        compile: wrap the model in ``torch.compile``.
        n_examples: decoded validation examples logged as a table at each validation.
        train_metrics_every_n_steps: how often training WER/CER are computed (decoding costs time).

    A batch is the dict of docs/design.md; ``forward(features, lengths)`` returns the
    model's ``(log_probs (B, T', n_classes), output_lengths (B,))``. ``decoder`` (greedy unless
    set to another of :mod:`tmaps.inference.decoding`) turns them into text for the error rates
    and for ``predict_step``, so ``trainer.predict`` yields ``{"id", "audio", "text"}`` per utterance.

    Validation logs ``val/cer``, ``val/wer`` and ``val/cer_best`` (the lowest ``val/cer`` of
    the run so far, kept in checkpoints so that a resumed run goes on from it). Testing logs
    ``<test_split>/cer`` and ``<test_split>/wer``: set ``test_split`` to the name of the split
    before ``trainer.test`` (``"test"``, ``"test_unseen"``), so that each has its own keys.
    """

    def __init__(
        self,
        model: Mapping,
        alphabet: str,
        features: Mapping,
        optim: Mapping,
        topo: Mapping | None = None,
        compile: bool = False,
        n_examples: int = 4,
        train_metrics_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        self.alphabet = Alphabet(alphabet)
        model_arguments = {**model_config(model), "n_features": features["n_mels"], "n_classes": self.alphabet.n_classes}
        self.save_hyperparameters(
            {
                "model": model_arguments,
                "alphabet": alphabet,
                "features": dict(features),
                "optim": dict(optim),
                "topo": dict(topo) if topo else None,
                "compile": compile,
                "n_examples": n_examples,
                "train_metrics_every_n_steps": train_metrics_every_n_steps,
            }
        )
        if optim.get("schedule", "cosine") not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim['schedule']!r}")
        self.model = build_model(model_arguments)
        self.forward_model: nn.Module = torch.compile(self.model) if compile else self.model
        self.ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
        self.topo = build_regularizer(self.model, dict(topo)) if topo else None
        self.train_error_rates, self.val_error_rates, self.test_error_rates = (
            MetricCollection({"cer": CharErrorRate(), "wer": WordErrorRate()}, prefix=f"{stage}/")
            for stage in ("train", "val", "test")
        )
        self.decoder = GreedyDecoder(self.alphabet)
        self.val_cer_best = MinMetric()
        self.test_split = "test"
        self._examples: list[list[str]] = []

    @classmethod
    def from_checkpoint(cls, path) -> ASRModule:
        """The module stored in a tmaps checkpoint, loaded with ``weights_only=True``."""
        checkpoint = read_checkpoint(path)
        stored = checkpoint["hyper_parameters"]
        module = cls(**{key: stored[key] for key in ("model", "alphabet", "features", "optim", "topo") if key in stored})
        module.load_state_dict(checkpoint["state_dict"])
        return module

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_model(features, lengths)

    def ctc_loss(self, log_probs: Tensor, output_lengths: Tensor, batch: Mapping) -> Tensor:
        return self.ctc(log_probs.transpose(0, 1).float(), batch["targets"], output_lengths, batch["target_lengths"])

    def decode(self, log_probs: Tensor, output_lengths: Tensor) -> list[str]:
        return self.decoder(log_probs, output_lengths)

    def training_step(self, batch: Mapping, batch_idx: int) -> Tensor:
        log_probs, output_lengths = self(batch["features"], batch["feature_lengths"])
        ctc = self.ctc_loss(log_probs, output_lengths, batch)
        loss = ctc
        batch_size = len(batch["records"])
        if self.topo is not None:
            topo_total, topo_terms = self.topo.loss(self.global_step)
            loss = ctc + topo_total
            self.log_dict({f"train/topo/{name}": term for name, term in topo_terms.items()}, batch_size=batch_size)
        self.log_dict({"train/loss": loss, "train/ctc": ctc}, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[-1]["lr"], batch_size=batch_size)
        if self.global_step % self.hparams.train_metrics_every_n_steps == 0:
            self._update_error_rates(self.train_error_rates, log_probs, output_lengths, batch)
            self.log_dict(self.train_error_rates, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        log_probs, output_lengths = self(batch["features"], batch["feature_lengths"])
        hypotheses = self._update_error_rates(self.val_error_rates, log_probs, output_lengths, batch)
        batch_size = len(batch["records"])
        self.log("val/loss", self.ctc_loss(log_probs, output_lengths, batch), batch_size=batch_size)
        self.log_dict(self.val_error_rates, prog_bar=True, batch_size=batch_size)
        room = self.hparams.n_examples - len(self._examples)
        for record, hypothesis in list(zip(batch["records"], hypotheses))[: max(room, 0)]:
            self._examples.append([record["id"], record["text"], hypothesis])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["val_cer_best"] = float(self.val_cer_best.compute()) if self.val_cer_best.update_count else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("val_cer_best") is not None:
            self.val_cer_best(torch.tensor(checkpoint["val_cer_best"]))

    def on_validation_epoch_start(self) -> None:
        self._examples = []

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_cer_best(self.val_error_rates["cer"].compute())
        self.log("val/cer_best", self.val_cer_best.compute())
        if self._examples:
            log_table(self.loggers, "val/examples", ["id", "reference", "hypothesis"], self._examples, self.global_step)
        if self.topo is not None:
            metrics = topography_metrics(self.model, self.topo.layer_names, self.topo.grids)
            untouched = [name for name in self.model.layer_names if name not in self.topo.layer_names and name != "head"]
            metrics |= untouched_participation_ratio(self.model, self.topo.layer_names, untouched)
            self.log_dict({f"val/topo/{name}": value for name, value in metrics.items()})

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        log_probs, output_lengths = self(batch["features"], batch["feature_lengths"])
        self._update_error_rates(self.test_error_rates, log_probs, output_lengths, batch)
        self.log_dict({f"{self.test_split}/{name}": metric for name, metric in self.test_error_rates.items(keep_base=True)}, batch_size=len(batch["records"]))

    def predict_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        log_probs, output_lengths = self(batch["features"], batch["feature_lengths"])
        hypotheses = self.decode(log_probs, output_lengths)
        return [{"id": record["id"], "audio": record["audio"], "text": text} for record, text in zip(batch["records"], hypotheses)]

    def _update_error_rates(
        self, error_rates: MetricCollection, log_probs: Tensor, output_lengths: Tensor, batch: Mapping
    ) -> list[str]:
        hypotheses = self.decode(log_probs, output_lengths)
        error_rates.update(hypotheses, [record["text"] for record in batch["records"]])
        return hypotheses

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters by layer; discriminative learning rates when configured."""
        optim = self.hparams.optim
        decay = optim.get("lr_decay_per_layer", 1.0)
        names = self.model.layer_names
        groups = []
        for depth, name in enumerate(names):
            parameters = [p for p in self.model.get_submodule(name).parameters() if p.requires_grad]
            if parameters:
                groups.append({"name": name, "params": parameters, "lr": optim["lr"] * decay ** (len(names) - 1 - depth)})
        return groups

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer = torch.optim.AdamW(
            self.parameter_groups(),
            lr=optim["lr"],
            weight_decay=optim.get("weight_decay", 0.0),
            betas=tuple(optim.get("betas", (0.9, 0.999))),
        )
        total_steps = None if optim.get("schedule", "cosine") == "constant" else int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": learning_rate_scheduler(optimizer, optim, total_steps), "interval": "step"}}


def learning_rate_scheduler(optimizer: torch.optim.Optimizer, optim: Mapping, total_steps: int | None) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule that ``optim["schedule"]`` names, for a run of ``total_steps`` optimizer steps.

    Every schedule reaches each parameter group's own rate after ``warmup_steps`` steps:

    - ``constant``: a linear warm-up, then that rate for good (``total_steps`` is not used);
    - ``cosine``: a linear warm-up, then a cosine decay towards ``min_lr_ratio`` times the rate;
    - ``onecycle``: ``OneCycleLR``: a cosine rise from 1/25 of the rate (:func:`onecycle_rise`), then a
      cosine fall to ``min_lr_ratio`` times the rate at the last step. It also cycles AdamW's beta1 from 0.95 down to
      0.85 at the peak and back (OneCycleLR's momentum cycle), so ``betas[0]`` is not used.
    """
    schedule, warmup_steps, min_ratio = optim.get("schedule", "cosine"), optim.get("warmup_steps", 0), optim.get("min_lr_ratio", 0.0)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(warmup_steps))
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=onecycle_rise(warmup_steps, total_steps) / total_steps,
            div_factor=ONECYCLE_START_DIVISOR,
            final_div_factor=1 / (ONECYCLE_START_DIVISOR * min_ratio) if min_ratio > 0 else math.inf,
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_ratio))


def onecycle_rise(warmup_steps: int, total_steps: int) -> int:
    """Steps of a one-cycle's rise: ``warmup_steps``, leaving one step for the fall; none instead of one (OneCycleLR divides by zero)."""
    rise = min(warmup_steps, total_steps - 1)
    return rise if rise >= 2 else 0


def warmup_constant(warmup_steps: int):
    """Learning-rate factor: linear warm-up to 1, then 1 for good, whatever the number of steps (no budget to fit)."""

    def factor(step: int) -> float:
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0

    return factor


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor

"""Transfer learning in the training loop: the recipe at start-up, gradual unfreezing during it.

``tmaps-train`` calls :func:`setup_transfer` with the ``transfer`` config group; it applies the
recipe to the module at once (checkpoint, alphabet swap, re-initialization, freezing) and
returns the callbacks that keep the recipe going while training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning, Callback
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from tmaps.callbacks.weight_change import WeightChange
from tmaps.transfer import TransferConfig, discriminative_lr, freeze_layers, is_frozen, prepare_transfer, unfreeze_layers

log = logging.getLogger(__name__)

# Learning-rate entries that schedulers keep in a param group (OneCycleLR uses all three).
LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


class TransferLearning(BaseFinetuning):
    """Keep layers frozen, and optionally unfreeze them one by one from the top down.

    With ``unfreeze_every_n_epochs = N``, the top-most frozen layer is unfrozen at the start of
    epoch ``N``, the next one at epoch ``2 N``, and so on (Howard & Ruder, 2018);
    ``unfreeze_every_n_steps = N`` does the same before optimizer steps ``N``, ``2 N``, ... A layer that
    is unfrozen joins the optimizer as a param group named after it, at its discriminative
    learning rate (``optim.lr * optim.lr_decay_per_layer ** (n_layers - 1 - depth)``, as
    ``ASRModule.parameter_groups`` gives the other layers) times the schedule's current factor,
    and the learning-rate scheduler drives it from then on like the other groups.

    Args:
        frozen_layers: the layers frozen at the start, input side first.
        unfreeze_every_n_epochs: ``None`` (and no ``unfreeze_every_n_steps``) keeps them
            frozen for the whole run.
        unfreeze_every_n_steps: the schedule in optimizer steps instead of epochs.
    """

    def __init__(
        self, frozen_layers: Sequence[str], unfreeze_every_n_epochs: int | None = None, unfreeze_every_n_steps: int | None = None
    ) -> None:
        super().__init__()
        self.frozen_layers = list(frozen_layers)
        self.unfreeze_every_n_epochs = unfreeze_every_n_epochs
        self.unfreeze_every_n_steps = unfreeze_every_n_steps

    def layers_unfrozen_by(self, epoch: int, step: int = 0) -> list[str]:
        """The layers that are trained again at ``epoch`` and optimizer ``step``, in the order they were unfrozen."""
        periods = max(
            epoch // self.unfreeze_every_n_epochs if self.unfreeze_every_n_epochs else 0,
            step // self.unfreeze_every_n_steps if self.unfreeze_every_n_steps else 0,
        )
        return self.frozen_layers[::-1][: min(periods, len(self.frozen_layers))]

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        freeze_layers(pl_module.model, self.frozen_layers)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        model = pl_module.model
        for name in self.layers_unfrozen_by(epoch, pl_module.global_step):
            if is_frozen(model, name):
                unfreeze_layers(model, [name])
                add_layer_group(pl_module, optimizer, name)
                log.info("epoch %d, step %d: unfroze %s", epoch, pl_module.global_step, name)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.unfreeze_every_n_steps and trainer.global_step % self.unfreeze_every_n_steps == 0:
            for optimizer in trainer.optimizers:
                self.finetune_function(pl_module, trainer.current_epoch, optimizer)


def add_layer_group(pl_module: pl.LightningModule, optimizer: Optimizer, layer_name: str) -> None:
    """Add ``layer_name``'s trainable parameters to ``optimizer`` at its discriminative rate.

    The group copies the settings of an existing layer group (weight decay, betas, ...) and
    scales its learning-rate entries by the ratio of the two layers' discriminative rates, so
    that it also starts at the schedule's current factor. Every ``LambdaLR`` (warm-up/cosine)
    scheduler of the trainer gets the same factor function for it; ``OneCycleLR`` reads the
    group's own ``initial_lr``/``max_lr``/``min_lr``.

    Raises:
        ValueError: the optimizer has no param group named after a layer (see
            ``ASRModule.parameter_groups``).
    """
    model = pl_module.model
    names = list(model.layer_names)
    reference_index, reference = next(
        ((index, group) for index, group in enumerate(optimizer.param_groups) if group.get("name") in names), (None, None)
    )
    if reference is None:
        raise ValueError("gradual unfreezing needs optimizer param groups named after the layers (ASRModule.parameter_groups)")
    optim = pl_module.hparams.optim
    decay = optim.get("lr_decay_per_layer", 1.0)
    ratio = discriminative_lr(1.0, decay, names.index(layer_name), len(names)) / discriminative_lr(
        1.0, decay, names.index(reference["name"]), len(names)
    )
    in_optimizer = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    parameters = [p for p in model.get_submodule(layer_name).parameters() if p.requires_grad and id(p) not in in_optimizer]
    if not parameters:
        return
    group = {key: value for key, value in reference.items() if key != "params"}
    group.update({key: reference[key] * ratio for key in LR_KEYS if key in reference})
    optimizer.add_param_group({**group, "name": layer_name, "params": parameters})
    schedule_new_groups(pl_module.trainer, optimizer, reference_index)


def schedule_new_groups(trainer: pl.Trainer, optimizer: Optimizer, reference_index: int) -> None:
    """Let the trainer's schedulers of ``optimizer`` drive param groups added after they were made.

    A new group's base rate is its ``initial_lr``; a ``LambdaLR`` gives it the factor function of
    group ``reference_index``.
    """
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if scheduler.optimizer is not optimizer:
            continue
        for group in optimizer.param_groups[len(scheduler.base_lrs) :]:
            scheduler.base_lrs.append(group.get("initial_lr", group["lr"]))
        if isinstance(scheduler, LambdaLR):
            missing = len(optimizer.param_groups) - len(scheduler.lr_lambdas)
            scheduler.lr_lambdas.extend([scheduler.lr_lambdas[reference_index]] * missing)


def setup_transfer(module: pl.LightningModule, config: Mapping | None) -> list[Callback]:
    """Apply the ``transfer`` config to ``module`` now and return the callbacks it needs.

    Args:
        module: an ``ASRModule`` (its ``model``, ``alphabet`` and ``hparams.features`` are used).
        config: the plain ``transfer`` config (keys of :class:`~tmaps.transfer.TransferConfig`);
            ``None`` or empty does nothing.

    Returns:
        ``[]`` without a config; else :class:`TransferLearning` when layers are frozen and,
        when the run starts from a checkpoint, :class:`~tmaps.callbacks.weight_change.WeightChange`
        (how far each layer moves from the source model). The config is recorded in
        ``module.hparams["transfer"]``, so that checkpoints name their source.
    """
    if not config:
        return []
    transfer = TransferConfig.from_dict(config)
    frozen = prepare_transfer(module.model, module.alphabet, transfer, features=module.hparams.features)
    module.hparams["transfer"] = dict(config)
    callbacks: list[Callback] = []
    if frozen:
        callbacks.append(TransferLearning(frozen, transfer.unfreeze_every_n_epochs, transfer.unfreeze_every_n_steps))
    if transfer.init_from:
        callbacks.append(WeightChange())
    return callbacks

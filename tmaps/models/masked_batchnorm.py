"""Batch normalization over the valid frames of a padded batch, without packing them.

:func:`masked_batch_norm` gives what ``nn.BatchNorm1d`` gives on the valid frames alone, gathered
as ``(frames, channels)``: the same output, gradients and running statistics (momentum or
cumulative average, unbiased variance over the valid frames, ``num_batches_tracked``), at
about the cost of the stock kernel on the padded batch:

- statistics: sums over the valid frames of the deviations from a shift close to each channel's
  mean, and of their squares. The shift spares the variance the cancellation that a plain sum
  of squares suffers when a channel's mean is large against its spread (``torch.var_mean``'s
  Welford pass, also exact, costs 4x more on CPU);
- output and gradient: the per-frame (eval-mode) batch-norm kernels on those deviations, plus
  the two per-channel terms through which batch statistics enter the gradient.

A ``SyncBatchNorm`` (Lightning's ``sync_batchnorm`` converts every ``BatchNorm1d``) in training
under an initialized process group combines the valid frames of all processes, as
``SyncBatchNorm`` does: statistics by Chan et al.'s parallel update of counts, means and squared
deviations, gradient sums all-reduced in the backward pass. This works on any backend, gloo on
CPU included, where ``SyncBatchNorm`` itself accepts GPU tensors only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm


def masked_batch_norm(norm: _BatchNorm, x: Tensor, valid: Tensor | None) -> Tensor:
    """``norm`` on ``x (batch, channels, time)`` as if on its ``valid (batch, time)`` frames alone.

    Padded frames of the output are 0. Batch statistics (in training, or without running
    statistics) are those of the valid frames, and so are the running statistics it updates
    when ``norm`` is training and tracks them. ``valid=None`` means every frame is valid: the
    stock module then runs, unless statistics must be synchronized across processes.
    """
    process_group = _synchronizing_group(norm)
    if valid is None and process_group is None:
        return norm(x)
    if valid is None:
        valid = torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool, device=x.device)
    if not (norm.training or not norm.track_running_stats):  # running statistics: each frame on its own
        return norm(x).masked_fill_(~valid[:, None], 0.0)
    # Masks multiply (0 or 1, 5x faster than masked_fill on CPU): padded frames hold finite values.
    mask = valid[:, None].float()
    with torch.no_grad():
        shift = x[:, :, 0].float().mean(0)  # every utterance's first frame: within a few spreads of the mean
        # float32 whatever x's dtype (bf16 under autocast): CPUs run mixed or bf16 elementwise kernels 2-5x slower.
        deviations = (x - shift[:, None]).mul_(mask)
        mean_deviation, variance, count = _valid_frame_statistics(deviations, valid)
        if process_group is not None:
            mean, variance, count = _combined_across_processes(shift + mean_deviation, variance, count, process_group)
            mean_deviation = mean - shift
    if norm.training and count <= 1:
        raise ValueError(f"Expected more than 1 valid frame per channel when training, got {count}")
    if norm.training and norm.track_running_stats:
        _update_running_statistics(norm, shift + mean_deviation, variance, count)
    weight = norm.weight if norm.affine else torch.ones_like(shift)
    bias = norm.bias if norm.affine else torch.zeros_like(shift)
    return _NormalizeValidFrames.apply(x, deviations, weight, bias, mean_deviation, variance, mask, count, norm.eps, process_group)


def _synchronizing_group(norm: _BatchNorm) -> dist.ProcessGroup | None:
    """The process group whose valid frames ``norm`` pools, as ``SyncBatchNorm.forward`` decides; ``None`` for one process."""
    if not (isinstance(norm, torch.nn.SyncBatchNorm) and norm.training and dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _valid_frame_statistics(deviations: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, int]:
    """Mean and biased variance per channel of ``deviations`` (0 on padded frames) over the valid frames, and their count."""
    count = int(valid.sum())
    if count == 0:
        zeros = deviations.new_zeros(deviations.shape[1])
        return zeros, zeros, 0
    mean = deviations.sum(2).sum(0) / count
    mean_square = torch.linalg.vector_norm(deviations, dim=2).square().sum(0) / count
    return mean, (mean_square - mean.square()).clamp_min(0), count


def _combined_across_processes(mean: Tensor, variance: Tensor, count: int, group: dist.ProcessGroup) -> tuple[Tensor, Tensor, int]:
    """Mean, biased variance and count of the valid frames of every process in ``group`` (Chan et al.'s parallel update)."""
    local = torch.cat([mean.new_tensor([count]), mean, variance * count]).double()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    counts, means, squared_deviations = torch.stack(gathered).split([1, mean.numel(), mean.numel()], dim=1)
    total = counts.sum()
    if total == 0:
        return mean, variance, 0
    combined_mean = (counts * means).sum(0) / total
    squared_deviation = (squared_deviations + counts * (means - combined_mean).square()).sum(0)
    return combined_mean.to(mean.dtype), (squared_deviation / total).to(variance.dtype), int(total)


@torch.no_grad()
def _update_running_statistics(norm: _BatchNorm, mean: Tensor, variance: Tensor, count: int) -> None:
    """``nn.BatchNorm1d``'s update: momentum (or the cumulative average for ``momentum=None``), unbiased variance."""
    norm.num_batches_tracked.add_(1)
    factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
    norm.running_var.mul_(1 - factor).add_((variance * count / (count - 1)).to(norm.running_var.dtype), alpha=factor)


class _NormalizeValidFrames(torch.autograd.Function):
    """Batch normalization of ``x``'s valid frames, 0 on padded ones, from ``deviations`` (``x`` less a per-channel
    shift, 0 on padded frames) and their valid frames' ``mean_deviation``, ``variance`` and ``count`` (over every
    process of ``process_group``, when given); ``mask (batch, 1, time)`` is 1 on valid frames, 0 on padded ones.
    ``x`` itself only receives the gradient."""

    @staticmethod
    def forward(ctx, x, deviations, weight, bias, mean_deviation, variance, mask, count, eps, process_group):
        y = torch.batch_norm(deviations, weight, bias, mean_deviation, variance, False, 0.0, eps, False).mul_(mask)
        ctx.save_for_backward(deviations, weight, mean_deviation, variance, mask)
        ctx.count, ctx.eps, ctx.process_group, ctx.dtype = count, eps, process_group, x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        deviations, weight, mean_deviation, variance, mask = ctx.saved_tensors
        grad_y = grad_y.float().mul_(mask) if grad_y.dtype != torch.float32 else grad_y * mask
        # Eval-mode backward: grad_y * weight * invstd, and the per-channel sums of grad_y * x_hat and of grad_y.
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_y, deviations, weight, mean_deviation, variance, None, None, False, ctx.eps, [True, True, True]
        )
        sum_grad_x_hat, sum_grad = grad_weight, grad_bias
        if ctx.process_group is not None:
            sums = torch.stack([grad_weight, grad_bias])
            dist.all_reduce(sums, group=ctx.process_group)
            sum_grad_x_hat, sum_grad = sums
        # Batch statistics add slope * (x - mean) + constant on valid frames, nothing on padded ones.
        invstd = (variance + ctx.eps).rsqrt()
        scale = weight * invstd / ctx.count
        slope = -scale * invstd * sum_grad_x_hat
        constant = -scale * sum_grad - slope * mean_deviation
        grad_x.addcmul_(deviations, slope[:, None]).addcmul_(mask, constant[:, None])
        return grad_x.to(ctx.dtype), None, grad_weight, grad_bias, None, None, None, None, None, None

"""Masked batch normalization against packing the valid frames for the stock BatchNorm1d (fp32): one process and DDP on gloo."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from tmaps.models import ConvBlock
from tmaps.models.masked_batchnorm import masked_batch_norm
from tmaps.models.wav2letter import valid_frames, zero_padding

CHANNELS = 6


def packed_batch_norm(norm: torch.nn.Module, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The reference: the valid frames gathered as ``(frames, channels)`` through the stock module, scattered back into zeros."""
    frames = norm(x.transpose(1, 2)[valid])
    return frames.new_zeros(valid.shape + frames.shape[-1:]).index_put_((valid,), frames).transpose(1, 2)


def packed_block_forward(block: ConvBlock, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``ConvBlock.forward`` as it was before ``masked_batch_norm``: packing for batch statistics."""
    x = block.conv(x.masked_fill(~valid_frames(lengths, x.shape[-1])[:, None], 0.0))
    valid = valid_frames(block.output_length(lengths), x.shape[-1])
    if block.norm.training or not block.norm.track_running_stats:
        x = packed_batch_norm(block.norm, x, valid).contiguous()  # dropout draws its mask in memory order
    else:
        x = block.norm(x)
    return block.dropout(block.act(x)).masked_fill(~valid[:, None], 0.0)


def assert_same_running_statistics(norm: torch.nn.Module, reference: torch.nn.Module) -> None:
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(reference, name), rtol=1e-5, atol=1e-5, msg=name)


def padded_batch(lengths: list[int], channels: int, offset: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``(batch, channels, max(lengths))`` features with distinct per-channel means, garbage in the padding."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), channels, max(lengths), generator=generator) * 3 + torch.linspace(-2, 2, channels)[:, None] + offset
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_statistics_output_gradients_and_running_averages_equal_packing(momentum, offset):
    """Three training steps of padded batches of several lengths, then eval; ``offset=30``: means 10x the spread."""
    norm = torch.nn.BatchNorm1d(CHANNELS, momentum=momentum)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(norm)
    for step, lengths in enumerate([[50, 17, 33, 2], [9, 41], [64, 64, 1]]):
        x, lengths = padded_batch(lengths, CHANNELS, offset, seed=step)
        valid = valid_frames(lengths, x.shape[-1])
        weights = torch.randn(x.shape)  # a loss whose gradient differs on every frame
        inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        outputs = [masked_batch_norm(norm, inputs[0], valid), packed_batch_norm(reference, inputs[1], valid)]
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
        for output in outputs:
            (output * weights).sum().backward()
        torch.testing.assert_close(inputs[0].grad, inputs[1].grad, rtol=1e-5, atol=1e-5)
        assert not inputs[0].grad.masked_select(~valid[:, None]).any(), "padded frames get no gradient"
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(norm, name).grad, getattr(reference, name).grad, rtol=1e-5, atol=1e-4, msg=name)
        assert_same_running_statistics(norm, reference)
    norm.eval()
    reference.eval()
    x, lengths = padded_batch([30, 12], CHANNELS, offset, seed=9)
    valid = valid_frames(lengths, x.shape[-1])
    torch.testing.assert_close(masked_batch_norm(norm, x, valid), packed_batch_norm(reference, x, valid), rtol=1e-5, atol=1e-5)


def test_statistics_keep_float32_accuracy_when_the_mean_is_300_times_the_spread():
    """Against float64: as close as the stock kernel is (4.5e-5 here), where a float32 sum of squares is off by 0.06."""
    x, lengths = padded_batch([50, 17, 33, 2], CHANNELS, offset=1000.0)
    valid = valid_frames(lengths, x.shape[-1])
    exact = packed_batch_norm(torch.nn.BatchNorm1d(CHANNELS).double(), x.double(), valid)
    torch.testing.assert_close(masked_batch_norm(torch.nn.BatchNorm1d(CHANNELS), x, valid).double(), exact, rtol=0, atol=1e-4)


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_a_conv_block_trains_and_evaluates_as_the_packing_block_did(track_running_stats):
    """fp32 ``ConvBlock`` with BatchNorm and dropout (same seed, same masks): outputs, every gradient, running statistics."""
    torch.manual_seed(0)
    block = ConvBlock(5, CHANNELS, kernel_size=7, stride=2, norm="batch", dropout=0.2)
    block.norm = torch.nn.BatchNorm1d(CHANNELS, track_running_stats=track_running_stats)
    reference = copy.deepcopy(block)
    for step, (lengths, train) in enumerate([([80, 31, 55], True), ([12, 80], True), ([80, 80], True), ([70, 9, 40], False)]):
        block.train(train)
        reference.train(train)
        x, lengths = padded_batch(lengths, 5, seed=step)
        x = zero_padding(x, lengths)  # a block's input, as a model or the block before gives it
        inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        torch.manual_seed(step)
        output = block(inputs[0], lengths)
        torch.manual_seed(step)
        expected = packed_block_forward(reference, inputs[1], lengths)
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
        weights = torch.randn(output.shape)
        (output * weights).sum().backward()
        (expected * weights).sum().backward()
        # On valid frames: the input's padded frames are 0 by contract, and the block before drops their gradient.
        valid = valid_frames(lengths, x.shape[-1])[:, None]
        torch.testing.assert_close(inputs[0].grad * valid, inputs[1].grad, rtol=1e-5, atol=1e-5)
        for (name, parameter), expected_parameter in zip(block.named_parameters(), reference.parameters()):
            torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-5, atol=1e-4, msg=name)
        if track_running_stats:
            assert_same_running_statistics(block.norm, reference.norm)


def test_one_valid_frame_in_training_is_refused_as_batchnorm_refuses_it():
    x, lengths = padded_batch([1, 0], CHANNELS)
    with pytest.raises(ValueError, match="more than 1 valid frame per channel when training, got 1"):
        masked_batch_norm(torch.nn.BatchNorm1d(CHANNELS), x, valid_frames(lengths, x.shape[-1]))


# ---------------------------------------------------------------- SyncBatchNorm on two processes (gloo)

RANK_LENGTHS = ([40, 13, 27], [8, 35])


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, lengths = padded_batch(RANK_LENGTHS[rank], CHANNELS, offset=5.0, seed=rank)
    return x, valid_frames(lengths, x.shape[-1]), torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + rank))


def initial_norm() -> torch.nn.BatchNorm1d:
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(CHANNELS)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def sync_worker(rank: int, world_size: int, store: str, results: str) -> None:
    """One DDP process: a ``SyncBatchNorm`` (as Lightning's ``sync_batchnorm`` converts it) on this rank's batch, two steps."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        norm = torch.nn.SyncBatchNorm.convert_sync_batchnorm(initial_norm())
        x, valid, weights = rank_batch(rank)
        outputs, grads = [], []
        for _ in range(2):
            inputs = x.clone().requires_grad_()
            output = masked_batch_norm(norm, inputs, valid)
            (output * weights).sum().backward()
            outputs.append(output.detach())
            grads.append(inputs.grad)
        parameter_grads = torch.stack([norm.weight.grad, norm.bias.grad])
        dist.all_reduce(parameter_grads)  # the gradient of the sum of both ranks' losses, as DDP's average times 2
        torch.save(
            {"outputs": outputs, "grads": grads, "parameter_grads": parameter_grads, "state": norm.state_dict()}, Path(results) / f"rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_on_two_processes_pools_the_valid_frames_of_both(tmp_path):
    """fp32, gloo on CPU: each rank's output and input gradient, the summed parameter gradients and the running statistics
    equal packing the union of both ranks' valid frames through one BatchNorm1d."""
    torch.multiprocessing.spawn(sync_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    reference = initial_norm()
    batches = [rank_batch(rank) for rank in range(2)]
    for step in range(2):
        inputs = [x.clone().requires_grad_() for x, _, _ in batches]
        packed = torch.cat([x.transpose(1, 2)[valid] for x, (_, valid, _) in zip(inputs, batches)])
        frames = reference(packed).split([int(valid.sum()) for _, valid, _ in batches])
        loss = 0
        for rank, ((_, valid, weights), rank_frames) in enumerate(zip(batches, frames)):
            expected = rank_frames.new_zeros(valid.shape + (CHANNELS,)).index_put_((valid,), rank_frames).transpose(1, 2)
            torch.testing.assert_close(results[rank]["outputs"][step], expected.detach(), rtol=1e-5, atol=1e-5)
            loss = loss + (expected * weights).sum()
        loss.backward()
        for rank in range(2):
            torch.testing.assert_close(results[rank]["grads"][step], inputs[rank].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0]["parameter_grads"], torch.stack([reference.weight.grad, reference.bias.grad]), rtol=1e-5, atol=1e-4)
    for rank in range(2):
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(results[rank]["state"][name], value, rtol=1e-5, atol=1e-5, msg=name)

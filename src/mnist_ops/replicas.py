"""Data parallelism inside one process: N copies of the model, each in its own thread, on one
intra-op thread each (use as many copies as cores).

Small convolutions do not spread well over intra-op threads: for lean-8k (bf16, channels_last,
batch 128) one thread trains 7,076 img/s and two threads 8,987, while two copies of the model,
one thread each, each on half the batch, train 10,819 img/s; at batch 256, 12,625 against 9,034
on two threads (`python benchmarks/levers.py --model lean-8k --dropout 0`; docs/speed.md).
So with `replicas = N` every batch is split into N shares; copy k runs forward and backward on share k in its own thread (PyTorch ops release
the GIL); the gradients are summed into the first copy, whose optimizer steps; then every copy
takes the first copy's weights, and the BatchNorm running statistics are averaged.

What changes against one copy: each BatchNorm normalizes over its share of the batch, not the
whole batch ("ghost batch norm"), so a recipe must be validated with its replica count.
Runs stay repeatable: each copy computes on one thread, and the sums go in a fixed order.
Dropout is refused: its masks are drawn from the one global generator, in whatever order the
threads reach it, so runs would not repeat.
"""

from __future__ import annotations

import copy
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn


class ThreadReplicas:
    def __init__(self, model: nn.Module, count: int,
                 forward_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        """`forward_loss(model, x, y)` -> (logits, mean loss): the engine's, run in each copy's thread."""
        self.models = [model] + [copy.deepcopy(model) for _ in range(count - 1)]
        # each worker thread sets its own intra-op thread count to 1 (OpenMP's count is per thread)
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="replica",
                                       initializer=torch.set_num_threads, initargs=(1,))
        weakref.finalize(self, self.pool.shutdown, wait=False)  # also closed if fit() stops on an error
        self.forward_loss = forward_loss
        self.active = count  # copies that had a share of the last batch

    def _forward_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, share: float):
        for parameter in model.parameters():
            parameter.grad = None
        model.train()
        logits, loss = self.forward_loss(model, x, y)
        (loss * share).backward()  # share-weighted: the sum over copies is the batch's mean loss
        return logits.detach(), loss.detach() * share

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Leaves the batch's gradient in the first copy; returns (logits, mean loss) for the batch."""
        shares = [(xs, ys) for xs, ys in zip(x.tensor_split(len(self.models)), y.tensor_split(len(self.models)))
                  if len(ys)]
        futures = [self.pool.submit(self._forward_backward, model, xs, ys, len(ys) / len(y))
                   for model, (xs, ys) in zip(self.models, shares)]
        results = [future.result() for future in futures]
        self.active = len(results)
        first = [parameter.grad for parameter in self.models[0].parameters()]
        for model in self.models[1:self.active]:
            torch._foreach_add_(first, [parameter.grad for parameter in model.parameters()])
        return torch.cat([logits for logits, _ in results]), sum(loss for _, loss in results)

    @torch.no_grad()
    def synchronize(self) -> None:
        """After the optimizer stepped the first copy: copy its weights, average running statistics."""
        first = self.models[0]
        running = [[buffer for buffer in model.buffers() if buffer.is_floating_point()]
                   for model in self.models[:self.active]]
        for buffer, *others in zip(*running, strict=True):
            buffer.copy_(torch.stack([buffer, *others]).mean(dim=0))
        # Every parameter and buffer, tensor by tensor (non-persistent buffers too, which load_state_dict
        # would skip: the copies stay the first's twins). load_state_dict(first.state_dict()) took 0.43 ms
        # a step for fast_8k; this whole method now takes 0.40 (0.70 before), of an 18 ms step
        # (`python benchmarks/replica_sync.py`; docs/benchmarks/followup-2026-11-26-afternoon.log).
        weights = [*first.parameters(), *first.buffers()]
        for model in self.models[1:]:
            for mine, theirs in zip([*model.parameters(), *model.buffers()], weights, strict=True):
                mine.copy_(theirs)

    def close(self) -> None:
        self.pool.shutdown()


@contextmanager
def one_thread_per_replica(count: int):
    """With several copies, each computes on one core: intra-op threads = 1 inside, restored after."""
    if count <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

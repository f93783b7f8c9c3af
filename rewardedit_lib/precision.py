"""Low-precision model weights with a full-precision master copy that the optimizer updates.

Why: under autocast every fp32 weight is cast to bf16 again on every forward pass. On the H100 that was
about 2,000 copy kernels and 32 ms of a 195 ms SD 1.5 training step at batch 32 (``benchmarks/README.md``).
Keeping the model's own weights in bf16 removes those casts. The optimizer, gradient clipping and EMA work
on an fp32 copy ("master weights"), so updates far smaller than a weight are not rounded away by bf16's
8-bit mantissa, and checkpoints and the saved model hold the fp32 values: a resumed run continues from
exactly the weights it stopped with.

The trainer uses it when ``TrainConfig.master_weights`` is set (with ``mixed_precision="bf16"``):

    master = MasterWeights(params, torch.bfloat16)   # the model's params become bf16; master is fp32
    ...backward...
    master.grads_from_model()                        # bf16 grads -> fp32 .grad of the master tensors
    clip(master.tensors); optimizer.step()           # the optimizer was built over master.tensors
    master.copy_to_model()                           # fp32 -> bf16 weights for the next forward
    with master.full_precision():                    # the model holds the fp32 values: save, validate,
        model.save_pretrained(...)                   # load a checkpoint into them
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn


class MasterWeights:
    """An fp32 master copy of ``params``, which are cast to ``dtype`` in place.

    ``tensors`` are the optimizer's parameters (fp32 leaf tensors, one per model parameter, same order).
    """

    def __init__(self, params: Sequence[nn.Parameter], dtype: torch.dtype = torch.bfloat16) -> None:
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"MasterWeights: dtype {dtype} is not a low precision (bfloat16 or float16)")
        self.params = list(params)
        self.dtype = dtype
        self.tensors = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.to(dtype)

    @torch.no_grad()
    def grads_from_model(self) -> None:
        """Move the model's low-precision gradients to the master tensors (as fp32); the model's are freed."""
        for p, m in zip(self.params, self.tensors):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """The model's low-precision weights from the master values (one fused copy where available)."""
        torch._foreach_copy_([p.data for p in self.params], self.tensors)

    @contextmanager
    def full_precision(self) -> Iterator[None]:
        """The model's parameters *are* the master tensors for the duration (same storage, fp32): what is
        saved is the fp32 state, and what is written into them (a loaded checkpoint, EMA weights) lands in
        the master copy. On exit the model holds low-precision copies of the (possibly new) values."""
        low = [p.data for p in self.params]
        for p, m in zip(self.params, self.tensors):
            p.data = m.data
        try:
            yield
        finally:
            for p, d in zip(self.params, low):
                p.data = d
            self.copy_to_model()

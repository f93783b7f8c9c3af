"""The memory plan in bytes: it reproduces the one GPU measurement, puts RewardEdit20K's caches in host
memory on a 16 GB T4, and the trainer's cached data serves the same tensors wherever its caches live."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rewardedit_lib import memory as M
from rewardedit_lib import train as T
from toy_data import annotated_toy_data

GIB = 2**30
SD15 = M.model_tensor_sizes("sd15")  # on the meta device: shapes only


def test_sd15_parameters_are_counted_from_the_model():
    assert sum(SD15) == 859_532_484 + 5_026_880  # the 8-channel UNet + the reward modules (PAPER.md)


@pytest.mark.parametrize("micro", [8, 16])
def test_the_plan_reproduces_the_t4_measurement(micro):
    """benchmarks/README.md: sd15-t4 on 32 synthetic triplets with 2 instructions, 12.45 / 12.76 GiB."""
    plan = M.plan_memory(T.preset("sd15-t4", batch_size=micro, grad_accum=1), 32, 2, 2, sizes=SD15)
    assert plan.gpu_total == pytest.approx(M.MEASURED_T4_PEAK[micro], abs=0.01 * GIB)


def test_sd15_t4_on_rewardedit20k_fits_a_t4_with_the_caches_in_host_memory():
    config = T.preset("sd15-t4")
    n = 20_000
    on_gpu = M.plan_memory(config, n, n, n, sizes=SD15)  # the caches where the trainer used to keep them
    # ~20K distinct instructions' hidden states (77 x 768 halves) and the triplets' latents: ~2.7 GiB
    assert on_gpu.caches == n * 77 * 768 * 2 + n * 768 * 2 + n * 3 * 4 * 32 * 32 * 2 + n * 28
    assert 2.6 * GIB < on_gpu.caches < 2.8 * GIB
    assert on_gpu.gpu_total > 15 * GIB  # 12.45 GiB + the caches: more than a T4 has
    plan = M.plan_memory(config, n, n, n, gpu_bytes=M.T4_BYTES, sizes=SD15)
    assert not plan.caches_on_gpu and plan.host_caches == on_gpu.caches
    assert plan.gpu_total == on_gpu.gpu_total - on_gpu.caches
    assert plan.gpu_total < 15 * GIB and plan.gpu_total <= plan.budget and plan.fits
    # the parts, in bytes: fp32 weights and grads, 8-bit AdamW (2 bytes + absmax per 256), no EMA
    p = sum(SD15)
    assert plan.weights == plan.grads == 4 * p and plan.ema == 0
    assert 2 * p < plan.optimizer < 2.05 * p
    assert plan.activations == 8 * M.ACTIVATION_BYTES_CHECKPOINTED  # micro-batch 16 / 2
    # a few hundred triplets stay on the GPU
    assert M.plan_memory(config, 300, 300, 300, gpu_bytes=M.T4_BYTES, sizes=SD15).caches_on_gpu
    # the paper's sd15 preset (AdamW, fp32 EMA): about 17 GB of state, caches on an 80 GB card
    big = M.plan_memory(T.preset("sd15"), n, n, n, gpu_bytes=80 * GIB, sizes=SD15)
    assert big.weights + big.grads + big.optimizer + big.ema == 20 * p and big.caches_on_gpu


def test_cache_device_decides_only_for_sd15_on_cuda():
    triplets = [SimpleNamespace(instruction=f"edit {i}", rewards=SimpleNamespace(text=f"feedback {i % 7}"))
                for i in range(20_000)]
    lines: list[str] = []
    cuda = torch.device("cuda")
    got = M.cache_device(T.preset("sd15-t4"), triplets, cuda, sizes=SD15, gpu_bytes=M.T4_BYTES, log=lines.append)
    assert got == torch.device("cpu") and "host memory" in lines[0] and "20000 instructions" in lines[0]
    assert M.cache_device(T.preset("sd15-t4"), triplets[:100], cuda, sizes=SD15, gpu_bytes=M.T4_BYTES,
                          log=lines.append) == cuda
    assert M.cache_device(T.preset("sd15-t4"), triplets, torch.device("cpu")) == torch.device("cpu")
    assert M.cache_device(T.preset("toy-gpu"), triplets, cuda) == cuda  # no plan for the toy model


def test_training_data_serves_the_same_tensors_from_a_host_store(tmp_path):
    """The trainer's caches built into another store: the same rows reach the training device."""
    d, rewards = annotated_toy_data(tmp_path, n=6, seed=1)
    config = T.TrainConfig(model="toy", batch_size=2, ema_decay=None)
    comp = T.load_components(config)
    triplets = T.load_triplets(d, rewards, config)
    here = T.TrainingData(triplets, comp, config, torch.device("cpu"))
    stored = T.TrainingData(triplets, comp, config, torch.device("cpu"), store=torch.device("cpu"))
    idx = torch.tensor([4, 1, 1])
    for a, b in zip(here.text(idx), stored.text(idx)):
        assert torch.equal(a, b)
    for a, b in zip(here.images(idx, None), stored.images(idx, None)):
        assert torch.equal(a, b)
    assert stored.hidden.device == stored.store and stored.instr_idx.device == stored.store

"""The same weights on any x86 CPU with AVX2: evo's workers pin MKL's and ATen's kernels (issue 26)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from evo.ray_start import WORKER_ENV

# A few AdamW steps of a small network of linear layers, as a Ray worker trains (one thread): MKL's
# matrix products and ATen's elementwise kernels. Prints a hash of the weights.
TRAIN = """
import hashlib, torch
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(96, 256), torch.nn.SiLU(), torch.nn.LayerNorm(256), torch.nn.Linear(256, 96))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
x, y = torch.randn(64, 96), torch.randint(0, 96, (64,))
for _ in range(5):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def has_avx512() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " avx512f" in cpuinfo.read_text()


def weights_hashes(*extras: dict) -> list[str]:
    """TRAIN in one process per environment (side by side), each with WORKER_ENV and its extra."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN], env={**env, **WORKER_ENV, **extra}, text=True,
                              stdout=subprocess.PIPE) for extra in extras]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and all(outs), outs
    return outs


@pytest.mark.integration  # two processes that import torch and train: seconds, not for the quick tier
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not has_avx512(),
                    reason="needs an x86 CPU with AVX-512 to stand in for one without it")
def test_a_cpu_without_avx512_trains_the_same_weights():
    """MKL told to use AVX2 only (MKL_ENABLE_INSTRUCTIONS, as on a CPU without AVX-512) gives the same
    weights as this CPU: without evo's pins they differ (a different loss after 60 steps of the demo's
    tiny Llama, 2026-12-02)."""
    here, without_avx512 = weights_hashes({}, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"})
    assert here == without_avx512

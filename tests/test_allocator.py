"""tdmpc.allocator: glibc's malloc keeps freed tensor memory, so a training update stops page-faulting."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import tdmpc
from tdmpc import allocator

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_importing_tdmpc_tunes_glibc_malloc():
    if not GLIBC or any(k in os.environ for k in (allocator.OPT_OUT, *allocator.ENV_KNOBS)):
        pytest.skip("glibc's malloc without an opt-out or MALLOC_* variable in the environment only")
    assert tdmpc.allocator.state == "tuned"


@pytest.mark.parametrize("env, state", [
    ({"CA_PRUNE_MALLOC": "default"}, "off (CA_PRUNE_MALLOC=default)"),
    ({"CA_PRUNE_MALLOC": "DEFAULT"}, "off (CA_PRUNE_MALLOC=default)"),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "off (set in the environment)"),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "off (set in the environment)"),
])
def test_an_opt_out_or_a_glibc_variable_in_the_environment_wins(monkeypatch, env, state):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = allocator.state
    try:
        assert allocator.tune() == state == allocator.state
    finally:
        allocator.state = before


# One CPU-preset update after another, in a fresh process (the setting is process-wide and cannot be undone):
# minor page faults per update after a warm-up. glibc's defaults trim the heap after every update and fault
# the same pages in again (measured: ~2 300-5 500 per update); tuned, the pages stay (~0-250).
CHILD = r"""
import json, resource, sys
import numpy as np, torch
import tdmpc
from benchmarks.train_speed import build
torch.set_num_threads(1)
agent, buf, cfg = build("cpu", torch.device("cpu"))
rng = np.random.default_rng(0)
for _ in range(8):
    agent.update(buf.sample(cfg.optim.batch_size, rng))
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    agent.update(buf.sample(cfg.optim.batch_size, rng))
print(json.dumps({"state": tdmpc.allocator.state,
                  "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 8}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuned_updates_page_fault_a_tenth_as_often_as_with_glibc_defaults():
    def faults(extra: dict) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in (allocator.OPT_OUT, *allocator.ENV_KNOBS)}
        env.update(extra, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])

    default, tuned = faults({allocator.OPT_OUT: "default"}), faults({})
    assert default["state"] == "off (CA_PRUNE_MALLOC=default)" and tuned["state"] == "tuned"
    assert default["faults"] > 1000
    assert tuned["faults"] < 0.1 * default["faults"], (tuned, default)

"""Run every ``python`` block of docs/extending.md, in order and in one namespace: the examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

from pruning.metrics import metric_names, unregister

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "extending_example"}
    try:
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), namespace)
        assert "act_rms" in metric_names()  # registered from outside pruning/
        tracker, policy = namespace["tracker"], namespace["policy"]
        act = tracker.scores("act_rms", normalize="none")
        assert set(act) == {g.name for g in tracker.groups} and all(float(v.min()) > 0 for v in act.values())
        assert policy.encoder[-1].out_features == policy.head[0].in_features < 16  # the coupling was pruned
    finally:
        unregister("act_rms")

"""The benchmarks' shared argv parser and the removal-vs-zeroing measurement on a tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.argv import parse_args  # noqa: E402


def test_parse_args_converts_to_the_defaults_types(capsys):
    d = {"repeats": 30, "min_run_time": 1.0, "latent": True, "out": "x.json"}
    assert parse_args(["repeats=5", "latent=false", "min_run_time=0.5"], d) == {
        "repeats": 5, "min_run_time": 0.5, "latent": False, "out": "x.json"}
    for bad, text in ((["repeat=5"], "unknown argument 'repeat=5'; allowed: repeats=..., min_run_time=..., latent=..., out=..."),
                      (["repeats=five"], "invalid argument repeats='five'; allowed: an integer"),
                      (["latent=maybe"], "invalid argument latent='maybe'; allowed: true|false")):
        with pytest.raises(SystemExit) as err:
            parse_args(bad, d)
        assert err.value.code == 2
        assert capsys.readouterr().err.strip() == f"error: {text}"


def test_removal_vs_zeroing_on_a_tiny_checkpoint(tracked_checkpoint, tmp_path):
    from benchmarks.removal_vs_zeroing import DEFAULTS, main

    out = main({**DEFAULTS, "checkpoint": str(tracked_checkpoint), "metrics": "l2,fisher", "ratios": "0.5",
                "episodes": 1, "out": str(tmp_path / "r.json")})
    assert [(r["metric"], r["ratio"]) for r in out["rows"]] == [("l2", 0.5), ("fisher", 0.5)]
    for r in out["rows"]:
        assert r["dense"] == out["rows"][0]["dense"]  # the same dense agent and episodes every time
        assert r["removed"] != r["zeroed"]  # LayerNorm statistics differ between removal and masking
    assert (tmp_path / "r.json").is_file()

"""The autoencoder experiment (benchmarks/autoencoder.py): pruning/ on a second multi-component model.

References are computed here from the dense weights by index selection (LayerNorms renormalise over
the kept channels only), independently of pruning/; FLOPs are checked against FlopCounterMode.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.autoencoder import (  # noqa: E402
    Autoencoder,
    ConfigError,
    eval_mse,
    load_digits_split,
    main,
    parse_args,
    train_epochs,
)
from pruning.config import TrackingConfig  # noqa: E402
from pruning.groups import model_groups  # noqa: E402
from pruning.measure import component_flops, count_params  # noqa: E402
from pruning.metrics import metric_names  # noqa: E402
from pruning.prune import prune  # noqa: E402
from pruning.tracker import ImportanceTracker  # noqa: E402

# Linear index inside its component -> group whose kept channels are that Linear's output rows.
OUT_GROUP = {("encoder", 0): "encoder/0", ("encoder", 3): "encoder/3", ("encoder", 6): "bottleneck",
             ("decoder", 0): "decoder/0", ("decoder", 3): "decoder/3"}


def small_model(act: str = "mish") -> Autoencoder:
    torch.manual_seed(0)
    model = Autoencoder(in_dim=10, hidden=(12, 8), latent=6, act=act)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return model.eval()


def reference_forward(dense: Autoencoder, keep: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Forward of ``dense`` keeping only ``keep[group]`` channels (all channels of groups not named)."""
    cur = torch.arange(x.shape[1])
    for comp in ("encoder", "decoder"):
        for i, m in enumerate(dense.components[comp]):
            if isinstance(m, nn.Linear):
                out = keep.get(OUT_GROUP.get((comp, i)), torch.arange(m.out_features))
                x = F.linear(x, m.weight[out][:, cur], m.bias[out])
                cur = out
            elif isinstance(m, nn.LayerNorm):
                x = F.layer_norm(x, (len(cur),), m.weight[cur], m.bias[cur], m.eps)
            else:
                x = m(x)
    return x


def test_groups_are_encoder_decoder_hidden_and_bottleneck():
    model = Autoencoder()  # 64 -> 128 -> 64 -> 16 -> 64 -> 128 -> 64
    groups = {g.name: g for g in model_groups(model)}
    assert {n: (g.component, g.kind, g.size, g.unit) for n, g in groups.items()} == {
        "encoder/0": ("encoder", "hidden", 128, 1),
        "encoder/3": ("encoder", "hidden", 64, 1),
        "decoder/0": ("decoder", "hidden", 64, 1),
        "decoder/3": ("decoder", "hidden", 128, 1),
        "bottleneck": ("bottleneck", "coupling", 16, 1),
    }
    enc, dec = model.encoder, model.decoder
    # Bottleneck: rows of the encoder's last Linear (weight, bias), its LayerNorm (weight, bias), columns
    # 0..16 of the decoder's first Linear.
    assert [(s.module, s.param_name, s.dim, s.offset) for s in groups["bottleneck"].slices] == [
        (enc[6], "weight", 0, 0), (enc[6], "bias", 0, 0), (enc[7], "weight", 0, 0), (enc[7], "bias", 0, 0),
        (dec[0], "weight", 1, 0),
    ]
    assert [(s.module, s.param_name, s.dim) for s in groups["decoder/3"].slices] == [
        (dec[3], "weight", 0), (dec[3], "bias", 0), (dec[4], "weight", 0), (dec[4], "bias", 0), (dec[6], "weight", 1),
    ]
    enc_params = (64 * 128 + 128) + 2 * 128 + (128 * 64 + 64) + 2 * 64 + (64 * 16 + 16) + 2 * 16
    dec_params = (16 * 64 + 64) + 2 * 64 + (64 * 128 + 128) + 2 * 128 + (128 * 64 + 64)
    assert count_params(model) == {"encoder": enc_params, "decoder": dec_params, "total": 36_080}


@pytest.mark.parametrize("act", ["mish", "relu"])
@pytest.mark.parametrize("name", ["encoder/0", "encoder/3", "bottleneck", "decoder/0", "decoder/3", "all"])
def test_pruned_forward_equals_reference(name, act):
    dense = small_model(act)
    groups = model_groups(dense)
    gen = torch.Generator().manual_seed(1)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in groups if name in ("all", g.name)}
    pruned = copy.deepcopy(dense)
    keep = prune(pruned, scores, 0.5, scope="per_group")
    assert set(keep) == set(scores)
    for g in groups:
        if g.name in keep:  # the half with the highest scores survives
            assert keep[g.name].tolist() == sorted(torch.argsort(scores[g.name], descending=True)[: math.ceil(g.size / 2)].tolist())
    x = torch.rand(7, 10, generator=gen)
    torch.testing.assert_close(pruned(x), reference_forward(dense, keep, x), rtol=1e-5, atol=1e-6)
    new = {g.name: g.size for g in model_groups(pruned)}
    assert new == {g.name: (math.ceil(g.size / 2) if g.name in keep else g.size) for g in groups}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), ratio=st.floats(0.0, 0.9), scope=st.sampled_from(["global", "per_component"]))
def test_pruned_forward_equals_reference_property(seed, ratio, scope):
    dense = small_model()
    groups = model_groups(dense)
    gen = torch.Generator().manual_seed(seed)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in groups}
    pruned = copy.deepcopy(dense)
    keep = prune(pruned, scores, ratio, scope=scope)
    total = sum(g.size for g in groups)
    if scope == "global":  # unit groups, min_channels=1: exactly floor(ratio * channels) removed
        assert total - sum(k.numel() for k in keep.values()) == math.floor(ratio * total + 1e-9)
    x = torch.rand(5, 10, generator=gen)
    torch.testing.assert_close(pruned(x), reference_forward(dense, keep, x), rtol=1e-5, atol=1e-6)


def test_flops_and_params_match_flop_counter_and_widths():
    model = Autoencoder()
    gen = torch.Generator().manual_seed(2)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in model_groups(model)}
    for ratio in (0.0, 0.3, 0.75):
        pruned = copy.deepcopy(model)
        prune(pruned, scores, ratio)
        for batch in (1, 9):
            with FlopCounterMode(display=False) as fc:
                pruned(torch.rand(batch, 64))
            assert component_flops(pruned, batch)["total"] == fc.get_total_flops()
        w = pruned.widths()
        dims = [64, *w["encoder"], *w["decoder"]]
        linears = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
        norms = 2 * sum(dims[1:-1])  # one LayerNorm after every Linear but the last
        assert count_params(pruned)["total"] == linears + norms
    assert component_flops(model, 1)["total"] == 2 * (64 * 128 + 128 * 64 + 64 * 16) * 2


def test_tiny_training_scores_every_metric_and_prunes():
    train, test = load_digits_split(0.2, 0)
    assert train.shape == (1437, 64) and test.shape == (360, 64)
    assert float(train.min()) == 0.0 and float(train.max()) == 1.0
    torch.manual_seed(0)
    model = Autoencoder()
    tracker = ImportanceTracker(model, TrackingConfig(snapshot_interval=0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = eval_mse(model, test)
    steps = train_epochs(model, train[:256], 2, opt, 64, torch.Generator().manual_seed(0), tracker)
    assert steps == 8 and tracker.num_steps == 8
    assert eval_mse(model, test) < before
    for metric in metric_names():
        scores = tracker.scores(metric)
        assert {n: s.numel() for n, s in scores.items()} == {g.name: g.size for g in model_groups(model)}
        assert all(bool(torch.isfinite(s).all()) for s in scores.values())
        pruned = copy.deepcopy(model)
        prune(pruned, scores, 0.5)
        assert sum(g.size for g in model_groups(pruned)) == 200
        assert math.isfinite(eval_mse(pruned, test))


def test_cli_rejects_unknown_and_bad_keys():
    with pytest.raises(ConfigError, match=r"unknown argument 'epoch=3'; allowed keys: seeds, epochs"):
        parse_args(["epoch=3"])
    with pytest.raises(ConfigError, match=r"invalid config: ratios=\[0.5, 1.0\]; allowed: distinct numbers in \(0, 1\)"):
        parse_args(["ratios=0.5,1"])
    with pytest.raises(ConfigError, match=r"invalid config: metrics=\['l3'\]"):
        parse_args(["metrics=l3"])
    with pytest.raises(ConfigError, match=r"invalid config: seeds='x'; allowed: an integer >= 1"):
        parse_args(["seeds=x"])
    with pytest.raises(SystemExit, match=r"^error: unknown argument 'foo=1'"):
        main(["foo=1"])
    cfg = parse_args(["ratios=0.1,0.9", "metrics=l1,random", "hidden=32,16", "plot=false"])
    assert (cfg.ratios, cfg.metrics, cfg.hidden, cfg.plot) == ([0.1, 0.9], ["l1", "random"], [32, 16], False)


def test_main_writes_json(tmp_path):
    out = tmp_path / "ae.json"
    args = ["seeds=2", "epochs=1", "train_samples=128", "ratios=0.5", "metrics=grad_acc,l1,random",
            "finetune_epochs=1", "hidden=32,16", "latent=8", f"out={out}"]
    result = main(args)
    saved = json.loads(out.read_text())
    assert saved["command"] == "python benchmarks/autoencoder.py " + " ".join(args)
    assert saved["config"]["metrics"] == ["grad_acc", "l1", "random"] and saved["config"]["seeds"] == 2
    assert saved["groups"] == {"encoder/0": {"component": "encoder", "kind": "hidden", "size": 32},
                               "encoder/3": {"component": "encoder", "kind": "hidden", "size": 16},
                               "decoder/0": {"component": "decoder", "kind": "hidden", "size": 16},
                               "decoder/3": {"component": "decoder", "kind": "hidden", "size": 32},
                               "bottleneck": {"component": "bottleneck", "kind": "coupling", "size": 8}}
    assert [(r["metric"], r["ratio"]) for r in saved["results"]] == [("grad_acc", 0.5), ("l1", 0.5), ("random", 0.5)]
    keys = {"mse_mean", "mse_std", "mse_before_ft_mean", "mse_before_ft_std", "params_mean", "params_std",
            "flops_mean", "flops_std", "per_seed"}
    assert keys <= set(saved["dense"])
    dense_flops = 2 * (64 * 32 + 32 * 16 + 16 * 8) * 2
    assert saved["dense"]["flops_mean"] == dense_flops
    for r in saved["results"]:
        assert keys <= set(r) and len(r["per_seed"]) == 2
        assert math.isfinite(r["mse_mean"]) and r["mse_std"] >= 0
        for p in r["per_seed"]:
            assert sum(p["widths"].values()) == 52  # half of 32 + 16 + 16 + 32 + 8 channels
            assert p["flops"] < dense_flops
    assert set(saved["best_metric"]) == {"0.5"}
    assert {Path(p).suffix for p in saved["plots"]} == {".png", ".svg"}
    assert all(Path(p).stat().st_size > 0 for p in saved["plots"])
    assert result["results"] == saved["results"]

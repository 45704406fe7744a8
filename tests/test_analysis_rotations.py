"""Study 3's probe measures and rotation analyses, against independent computations."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from shiftbench.measures import core as measures
from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext, Report
from shiftbench.spec.study import parse_study
from shiftbench.studies.adam_rotations.analysis import seed_interval, slowdowns
from shiftbench.studies.adam_rotations.hessian import random_directions
from shiftbench.training.rotations import RotatedOptimizer
from shiftbench.trials.runner import TrialRunner

PROBES = [
    "update_orthogonality_mlp",
    "update_orthogonality_head",
    "update_orthogonality_embed",
    "linf_gradient_bound",
    "hessian_11_norm",
    "hessian_neuron_share",
    "hessian_layer_share",
    "hessian_other_share",
    "hessian_neuron_mean",
    "hessian_layer_mean",
    "hessian_other_mean",
    *[
        f"hessian_{block}_{kind}_{direction}"
        for block in ("neuron", "layer", "other")
        for kind in ("contribution", "abs_contribution")
        for direction in ("random", "update")
    ],
    "adam_v_log10_q10",
    "adam_v_log10_q50",
    "adam_v_log10_q90",
]


class Tiny(nn.Module):
    """12 parameters (fewer than the Hessian probe's 16 samples, so its estimate is exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(x)))


def trained(optimizer_factory):
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    optimizer = optimizer_factory(model)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, (x, y), optimizer


def probe(model, data, optimizer):
    config = measures.MeasureConfig(  # every batch = all data
        noise_batch_size=32, linf_batches=4, hessian_batches=2, orthogonality_steps=2
    )
    return measures.compute_with_reasons(
        model, data, names=PROBES, config=config, optimizer=optimizer
    )


def full_hessian(model, x, y) -> np.ndarray:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(vector):
        chunks = torch.split(vector, [math.prod(s) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat).double().numpy()


def test_adam_probes_match_direct_computations():
    model, (x, y), adam = trained(lambda m: torch.optim.Adam(m.parameters(), lr=0.05))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values, reasons = probe(model, (x, y), adam)
    (beta1, beta2), eps = adam.defaults["betas"], adam.defaults["eps"]
    # two steps of resumed training on all the data, each step's CV averaged
    resumed, resumed_adam = trained(lambda m: torch.optim.Adam(m.parameters(), lr=0.05))[::2]
    cvs = {"mlp": [], "head": []}
    for _ in range(2):
        resumed_adam.zero_grad()
        F.cross_entropy(resumed(x), y).backward()
        resumed_adam.step()
        for name, layer in (("mlp", resumed.fc), ("head", resumed.head)):
            state = resumed_adam.state[layer.weight]
            step = float(state["step"])
            m_hat = state["exp_avg"].numpy() / (1 - beta1**step)
            v_hat = state["exp_avg_sq"].numpy() / (1 - beta2**step)
            singular = np.linalg.svd(m_hat / (np.sqrt(v_hat) + eps), compute_uv=False)
            cvs[name].append(singular.std() / singular.mean())
    for name, expected in cvs.items():
        assert values[f"update_orthogonality_{name}"] == pytest.approx(np.mean(expected), rel=1e-5)
    for key, value in model.state_dict().items():  # resumed on a copy
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert math.isnan(values["update_orthogonality_embed"])
    assert "no embed weight matrix" in reasons["update_orthogonality_embed"]
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    expected_linf = max(g.abs().max().item() for g in grads)
    assert values["linf_gradient_bound"] == pytest.approx(expected_linf, rel=1e-5)
    hessian = np.abs(full_hessian(model, x, y))
    assert values["hessian_11_norm"] == pytest.approx(hessian.sum(), rel=1e-4)
    neuron = np.array([0, 0, 1, 1, 0, 1, 2, 2, 3, 3, 2, 3])  # fc.weight rows, fc.bias, head
    layer = np.array([0] * 6 + [1] * 6)
    same_neuron = neuron[:, None] == neuron[None, :]
    same_layer = (layer[:, None] == layer[None, :]) & ~same_neuron
    other = ~(same_neuron | same_layer)
    for block, mask in (("neuron", same_neuron), ("layer", same_layer), ("other", other)):
        share = hessian[mask].sum() / hessian.sum()
        assert values[f"hessian_{block}_share"] == pytest.approx(share, rel=1e-4)
        assert values[f"hessian_{block}_mean"] == pytest.approx(hessian[mask].mean(), rel=1e-4)
    # Table 1: r_i[I] . dw over every row i, dw Adam's unit update or 16 unit random directions
    signed = full_hessian(model, x, y)
    update = np.concatenate(
        [
            (s["exp_avg"] / (1 - beta1 ** float(s["step"])))
            .div((s["exp_avg_sq"] / (1 - beta2 ** float(s["step"]))).sqrt() + eps)
            .numpy()
            .ravel()
            for s in (adam.state[p] for p in model.parameters())
        ]
    )
    seed = zlib.crc32(b"hessian_contribution_random")
    random = random_directions(12, 16, torch.Generator().manual_seed(seed)).numpy()
    for direction, dws in (
        ("update", update[None, :] / np.linalg.norm(update)),
        ("random", random),
    ):
        for block, mask in (("neuron", same_neuron), ("layer", same_layer), ("other", other)):
            contributions = (signed * mask) @ dws.T  # (rows, directions)
            name = f"hessian_{block}_contribution_{direction}"
            assert values[name] == pytest.approx(contributions.mean(), rel=1e-4, abs=1e-12)
            name = f"hessian_{block}_abs_contribution_{direction}"
            assert values[name] == pytest.approx(np.abs(contributions).mean(), rel=1e-4)
    v = np.concatenate([s["exp_avg_sq"].numpy().ravel() for s in adam.state.values()])
    logs = np.log10(v[v > 0].astype(np.float64))
    for q, name in ((0.1, "q10"), (0.5, "q50"), (0.9, "q90")):
        assert values[f"adam_v_log10_{name}"] == pytest.approx(np.quantile(logs, q), rel=1e-6)


def test_second_moment_decades_are_the_histogram_of_adams_v():
    model, data, adam = trained(lambda m: torch.optim.Adam(m.parameters(), lr=0.05))
    names = [f"adam_v_decade_m{k}" for k in range(20, 0, -1)]
    values, _ = measures.compute_with_reasons(model, data, names=names, optimizer=adam)
    v = np.concatenate([s["exp_avg_sq"].numpy().ravel() for s in adam.state.values()])
    decades = np.clip(np.floor(np.log10(v[v > 0].astype(np.float64))), -20, -1)
    for k in range(20, 0, -1):
        assert values[f"adam_v_decade_m{k}"] == pytest.approx(np.mean(decades == -k))
    assert sum(values.values()) == pytest.approx(1.0)
    assert max(values.values()) < 1  # spread over several decades


def test_probes_of_a_rotated_adam_are_taken_in_its_basis():
    model, (x, y), rotated = trained(
        lambda m: RotatedOptimizer(m.parameters(), torch.optim.Adam, scope="global", lr=0.05)
    )
    values, _ = probe(model, (x, y), rotated)
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    columns = []  # R e_j for each standard coordinate j, in model.parameters() order
    for j in range(sum(sizes)):
        unit = torch.zeros(sum(sizes))
        unit[j] = 1.0
        chunks = torch.split(unit, sizes)
        rotated_unit = rotated.rotate({p: c.reshape(p.shape) for p, c in zip(params, chunks)})
        columns.append(torch.cat([t.reshape(-1) for t in rotated_unit.values()]))
    rotation = torch.stack(columns, dim=1).double().numpy()
    assert np.allclose(rotation @ rotation.T, np.eye(len(rotation)), atol=1e-6)
    hessian = full_hessian(model, x, y)
    expected = np.abs(rotation @ hessian @ rotation.T).sum()
    assert values["hessian_11_norm"] == pytest.approx(expected, rel=1e-4)
    assert values["hessian_11_norm"] != pytest.approx(np.abs(hessian).sum(), rel=1e-3)
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    flat = torch.cat([g.reshape(-1) for g in grads]).double().numpy()
    assert values["linf_gradient_bound"] == pytest.approx(np.abs(rotation @ flat).max(), rel=1e-5)
    assert np.isfinite(values["update_orthogonality_mlp"])


# The Hessian's block structure (Table 1, Fig. 9) needs only the model: defined for any run
# and on a stored model; every other probe reads Adam's state.
MODEL_ONLY = [
    name
    for name in PROBES
    if name.startswith("hessian_") and name != "hessian_11_norm" and not name.endswith("update")
]


def test_probes_are_nan_with_a_reason_without_adam_moments():
    model, data, sgd = trained(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    needs_adam = [name for name in PROBES if name not in MODEL_ONLY]
    for optimizer, why in ((sgd, "SGD keeps no Adam moments"), (None, "no optimizer given")):
        values, reasons = probe(model, data, optimizer)
        assert all(math.isnan(values[name]) for name in needs_adam)
        assert all(why in reasons[name] for name in needs_adam)
        assert all(math.isfinite(values[name]) for name in MODEL_ONLY)


def test_the_runner_gives_the_trials_optimizer_to_the_measures(tmp_path):
    raw = {
        "name": "r",
        "datasets": {"colored_digits": {"test_env": 2}},
        "objective": {"steps": 4, "eval_every": 2, "model": "cnn", "width": 8},
        "solvers": {"adam": {"rotation": ["none", "output"]}, "sgd": {}},
        "search": {"kind": "grid"},
        "seeds": [0],
    }
    runner = TrialRunner({})
    names = ("update_orthogonality_conv", "adam_v_log10_q50")
    rows = {}
    for trial in parse_study(raw, tmp_path / "r.yml").trials():
        outcome = runner.run(
            trial,
            "r",
            measures=names,
            measure_config=measures.MeasureConfig(orthogonality_steps=3),
        )
        assert outcome.status == "done", outcome.error
        rows[(trial.solver, dict(trial.solver_params)["rotation"])] = outcome.rows[-1]
    for key in (("adam", "none"), ("adam", "output")):
        assert all(np.isfinite(rows[key][f"measure.{n}"]) for n in names)
    assert rows[("adam", "none")]["measure.adam_v_log10_q50"] != pytest.approx(
        rows[("adam", "output")]["measure.adam_v_log10_q50"]
    )
    assert math.isnan(rows[("sgd", "none")]["measure.adam_v_log10_q50"])
    assert "SGD keeps no Adam moments" in rows[("sgd", "none")]["measure_errors"]


def ledger() -> pd.DataFrame:
    """Two models on one data set; loss exp(-step / (100 scale)), probes on the final row."""
    scales = {"a": {"none": 1.0, "global": 2.0}, "b": {"none": 4.0, "global": 4.0}}
    rows = []
    for model, by_scope in scales.items():
        for scope, scale in by_scope.items():
            for seed in (0, 1):
                trial = f"{model}-{scope}-{seed}"
                for step in range(0, 401 if scope == "none" else 801, 20):
                    rows.append(
                        {
                            "trial_id": trial,
                            "status": "done",
                            "dataset": "d",
                            "obj.model": model,
                            "solver": "adam",
                            "hp.rotation": scope,
                            "seed": seed,
                            "step": step,
                            "train_loss": math.exp(-step / (100 * scale)),
                        }
                    )
                rows[-1]["measure.update_orthogonality_mlp"] = 1.0 + seed + (scope == "global")
                rows[-1]["measure.update_orthogonality_conv"] = math.nan
                rows[-1]["measure.linf_gradient_bound"] = 10.0 * (seed + 1)
                rows[-1]["measure.hessian_neuron_share"] = 0.2 + 0.1 * seed
                rows[-1]["measure.hessian_layer_share"] = 0.3
                rows[-1]["measure.hessian_other_share"] = 0.5 - 0.1 * seed
                rows[-1]["measure.hessian_neuron_mean"] = 1e-2
                rows[-1]["measure.hessian_other_mean"] = 1e-4 * (seed + 1)
                rows[-1]["measure.hessian_other_contribution_update"] = 1e-3 * (1 - 2 * seed)
                rows[-1]["measure.hessian_other_abs_contribution_update"] = 1e-3 * (seed + 1)
                for k in range(1, 21):  # v in 1e-8 (seed 0) or 1e-6 (seed 1), or spread
                    concentrated = k == 8 - 2 * seed
                    spread = 0.5 if k in (5, 9) else 0.0
                    rows[-1][f"measure.adam_v_decade_m{k}"] = (
                        spread if scope == "global" else float(concentrated)
                    )
    probes = {c: math.nan for c in rows[-1] if c.startswith("measure.")}
    sgd = dict(rows[-1], trial_id="sgd", solver="sgd", **probes)
    return pd.DataFrame([*rows, sgd])


def run_analysis(name: str, frame: pd.DataFrame, tmp_path) -> Report:
    report = Report(tmp_path, "t", interactive=True)  # the HTML site's figures too
    registry.analysis(name).run(AnalysisContext(None, frame, report))
    assert all(item.plotly["data"] for item in report.items if item.kind == "figure")
    return report


def test_orthogonality_table_averages_seeds_per_task_and_scope(tmp_path):
    report = run_analysis("rotation_orthogonality", ledger(), tmp_path)
    table = pd.read_csv(tmp_path / "rotation_orthogonality.csv")
    assert list(table.columns) == ["task", "solver", "scope", "mlp_mean", "mlp_std"]
    assert list(table["task"]) == ["d/a", "d/a", "d/b", "d/b"]
    assert list(table["scope"]) == ["none", "global", "none", "global"]
    assert list(table["mlp_mean"]) == [1.5, 2.5, 1.5, 2.5]
    assert table["mlp_std"].to_numpy() == pytest.approx([np.std([1, 2], ddof=1)] * 4)
    assert (tmp_path / "rotation_orthogonality.png").is_file()
    assert (tmp_path / "rotation_orthogonality.tex").is_file() and report.sections


def test_probe_table_has_the_probes_and_the_slowdown_per_task(tmp_path):
    run_analysis("rotation_probes", ledger(), tmp_path)
    table = pd.read_csv(tmp_path / "rotation_probes.csv").set_index(["task", "scope"])
    assert table["linf_gradient_bound_mean"].tolist() == [15.0] * 4
    assert table.loc[("d/a", "global"), "slowdown_pct"] == pytest.approx(100.0, rel=1e-2)
    assert table.loc[("d/b", "global"), "slowdown_pct"] == pytest.approx(0.0, abs=1e-9)
    assert "sgd" not in set(table["solver"])
    assert (tmp_path / "rotation_probes.png").is_file()


def test_slowdown_keeps_the_models_of_one_data_set_apart(tmp_path):
    table = slowdowns(ledger()).set_index(["task", "scope", "seed"])
    assert table.loc[("d/a", "global", 0), "slowdown_pct"] == pytest.approx(100.0, rel=1e-2)
    assert table.loc[("d/b", "global", 1), "slowdown_pct"] == pytest.approx(0.0, abs=1e-9)
    half = slowdowns(ledger(), at=0.5).set_index(["task", "scope", "seed"])
    assert half.loc[("d/a", "global", 0), "target_loss"] == pytest.approx(math.exp(-2))
    assert half.loc[("d/a", "global", 0), "slowdown_pct"] == pytest.approx(100.0, rel=1e-2)
    assert table.loc[("d/a", "global", 0), "final_loss"] == pytest.approx(math.exp(-4))
    with pytest.raises(ValueError, match="at must be in"):
        slowdowns(ledger(), at=0.0)
    run_analysis("rotation_slowdown", ledger(), tmp_path)
    summary = pd.read_csv(tmp_path / "rotation_slowdown.csv").set_index(["task", "scope"])
    assert set(summary.index.get_level_values("task")) == {"d/a", "d/b"}
    assert summary.loc[("d/a", "global"), "slowdown_half_pct_mean"] == pytest.approx(100, 1e-2)
    assert summary.loc[("d/a", "global"), "seeds"] == 2
    finals = table.xs(("d/a", "global"), level=["task", "scope"])["final_loss"]
    assert tuple(summary.loc[("d/a", "global"), ["final_loss_low", "final_loss_high"]]) == (
        pytest.approx(seed_interval(finals))
    )
    assert (tmp_path / "rotation_curves.png").is_file()


def test_hessian_block_table_averages_seeds(tmp_path):
    run_analysis("rotation_hessian_blocks", ledger(), tmp_path)
    table = pd.read_csv(tmp_path / "rotation_hessian_blocks.csv").set_index(["task", "scope"])
    assert table["neuron_share_mean"].tolist() == pytest.approx([0.25] * 4)
    assert table["other_share_std"].tolist() == pytest.approx([np.std([0.5, 0.4], ddof=1)] * 4)
    assert table["other_entry_vs_neuron_entry"].tolist() == pytest.approx([0.015] * 4)
    assert "sgd" not in set(table["solver"])
    table = pd.read_csv(tmp_path / "rotation_hessian_contributions.csv")
    assert list(table.columns) == [
        "task",
        "solver",
        "scope",
        "other_contribution_update",
        "other_abs_contribution_update",
    ]
    assert table["other_contribution_update"].tolist() == pytest.approx([0.0] * 4)
    # the table is in units of 1e-6
    assert table["other_abs_contribution_update"].tolist() == pytest.approx([1.5e-3 * 1e6] * 4)


def test_second_moment_table_averages_the_decades_over_seeds(tmp_path):
    run_analysis("rotation_second_moments", ledger(), tmp_path)
    table = pd.read_csv(tmp_path / "rotation_second_moments.csv").set_index(["task", "scope"])
    assert table.loc[("d/a", "none"), ["1e-8", "1e-6", "1e-7"]].tolist() == [0.5, 0.5, 0.0]
    assert table.loc[("d/a", "global"), ["1e-9", "1e-5", "1e-8"]].tolist() == [0.5, 0.5, 0.0]
    assert (tmp_path / "rotation_second_moments.png").is_file()


def test_analyses_say_so_when_nothing_was_probed(tmp_path):
    frame = ledger().drop(columns=[c for c in ledger() if c.startswith("measure.")])
    for name in (
        "rotation_orthogonality",
        "rotation_probes",
        "rotation_hessian_blocks",
        "rotation_second_moments",
    ):
        report = run_analysis(name, frame, tmp_path / name)
        assert report.sections and "No run measured" in report.sections[0]


@pytest.mark.parametrize(
    ("study", "trials"),
    [
        ("adam_rotations", 72),
        ("adam_rotations_small", 72),
        ("adam_rotations_block_size", 12),
        ("adam_rotations_layer_types", 66),
        ("adam_rotations_vit", 30),
    ],
)
def test_rotation_studies_use_the_papers_settings(study, trials):
    from pathlib import Path

    from shiftbench.spec.study import load_study

    loaded = load_study(Path(__file__).resolve().parents[1] / "benchmarks" / f"{study}.yml")
    expanded = loaded.trials()
    assert len(expanded) == trials
    for trial in expanded:
        params = dict(trial.solver_params)
        assert params["max_grad_norm"] == 1.0 and params["lr_schedule"] == "cosine"
        if params["rotation"] == "svd":
            assert params["svd_every"] == 250
        if study != "adam_rotations_block_size" and params["rotation"] not in ("none", "svd"):
            assert params["rotation_block_size"] == 768

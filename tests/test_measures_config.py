"""The measures' settings: their validation, the papers' defaults, and a module that imports
without torch (the study file is parsed without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shiftbench.measures.config import MeasureConfig
from shiftbench.spec.study import load_study


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="mc_draws"):
        MeasureConfig(mc_draws=0)
    with pytest.raises(ValueError, match="accuracy_drop"):
        MeasureConfig(accuracy_drop=1.5)
    with pytest.raises(ValueError, match="noise_std must be one of reference, paper"):
        MeasureConfig(noise_std="sigma")


def test_study3_probe_sample_sizes_default_to_the_papers():
    """Zhang, Maes et al. (NeurIPS 2025): 1,000 minibatches for the L-inf bound (App. B.3,
    Algorithm 1), Hessian rows averaged over k = 5,000 minibatches (Sec. 4.1), 500 resumed
    steps for update orthogonality (Sec. 4.2); the full-scale study file states the same."""
    paper = {"linf_batches": 1000, "hessian_batches": 5000, "orthogonality_steps": 500}
    default = MeasureConfig()
    assert {key: getattr(default, key) for key in paper} == paper
    study = load_study(Path(__file__).parents[1] / "benchmarks" / "adam_rotations.yml")
    assert {key: getattr(study.measure_config, key) for key in paper} == paper


def test_the_settings_and_the_study_file_import_without_torch():
    code = (
        "import sys; import shiftbench.measures.config, shiftbench.spec.study; "
        "print(sorted(m for m in ('torch', 'shiftbench.measures.core') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

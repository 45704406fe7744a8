"""The README's examples, taken from the README itself, do what its text says."""

import re
from pathlib import Path

import yaml

from shiftbench.study import parse_study

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block under the README's ``## heading``."""
    section = README.split(f"## {heading}\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


def test_the_sample_study_has_the_solvers_it_says_and_a_list_is_a_choice_under_random(
    tmp_path,
):
    raw = yaml.safe_load(readme_block("A study file", "yaml"))
    study = parse_study(raw, tmp_path / "sample.yml")
    said = NUMBERS[raw["description"].split()[0]]
    assert "optimizers" in raw["description"] and len(study.solvers) == said
    trials = study.trials()
    adam = [t for t in trials if t.solver == "adam" and t.seed == 0]
    per_dataset = raw["search"]["trials_per_solver"]
    assert len(adam) == per_dataset * len(raw["datasets"])  # 3 per dataset, not 6
    assert {dict(t.solver_params)["weight_decay"] for t in adam} <= {0.0, 1.0e-4}

"""pyproject.toml: setuptools reads it without a deprecation banner on every install."""

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_setuptools_reads_the_project_without_a_warning_and_an_spdx_license():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert [str(w.message) for w in caught] == []
    assert dist.metadata.license_expression == "BSD-3-Clause"

"""Data-home resolution and the one-line missing-data error."""

from pathlib import Path

import pytest

from shiftbench.data.paths import ENV_VAR, MissingDataError, data_home, require_files


def test_explicit_argument_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_home(tmp_path / "explicit") == tmp_path / "explicit"


def test_environment_variable_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    assert data_home() == Path("~/data").expanduser()


def test_require_files_returns_root_when_present(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"")
    assert require_files("Toy", tmp_path, ["a.bin"], "toy.org") == tmp_path


def test_require_files_error_is_one_clear_line(tmp_path):
    with pytest.raises(MissingDataError) as info:
        require_files("Toy", tmp_path, ["b.bin"], "https://toy.org/b.bin")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Toy: data not found at ")
    assert str(tmp_path / "b.bin") in message and "https://toy.org/b.bin" in message
    assert isinstance(info.value, FileNotFoundError)

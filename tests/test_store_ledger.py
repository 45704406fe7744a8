"""The ledger: atomic appends, compaction, crash points, foreign files, four readers."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from shiftbench import faults
from shiftbench.faults import InjectedFault
from shiftbench.store import ledger as store

KEY = list(store.KEY_COLUMNS)


def rows(
    trial: str,
    attempt: int = 0,
    status: str = "done",
    steps=(0, 10, 20),
    study: str = "s",
    lr: float = 0.1,
) -> list[dict]:
    """Ledger rows of one trial attempt, with metrics that depend on trial, attempt and step."""
    base = sum(map(ord, trial))
    return [
        {
            "study": study,
            "trial_id": trial,
            "attempt": attempt,
            "status": status,
            "error": "",
            "hp.lr": lr,
            "step": step,
            "train_loss": base / (2 + step) + attempt,
            "id_acc": (base % 7) / 7 + step / 100,
            "config": json.dumps({"trial": trial}),
        }
        for step in steps
    ]


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["study", *KEY, "status", "train_loss", "id_acc"]
    return frame[columns].sort_values(KEY).reset_index(drop=True).astype({"study": str})


def parquet_files(store_dir: Path, study: str = "s") -> list[str]:
    return sorted(p.name for p in store.study_dir(store_dir, study).iterdir())


def test_append_is_atomic_and_partitioned_by_study(store_dir):
    path = store.append(store_dir, "s", rows("a"))
    assert path.parent == store.study_dir(store_dir, "s")
    assert parquet_files(store_dir) == [path.name]  # no temporary file left
    table = pq.read_table(path)
    assert table.schema.metadata[store.VERSION_KEY] == str(store.SCHEMA_VERSION).encode()
    assert "study" not in table.column_names  # the folder is the partition
    ledger = store.read(store_dir, "s")
    assert sorted_rows(ledger).equals(sorted_rows(pd.DataFrame(rows("a"))))
    assert store.append(store_dir, "s", []) is None
    with pytest.raises(ValueError, match="other"):
        store.append(store_dir, "s", rows("b", study="other"))


def test_write_killed_before_rename_leaves_only_a_temporary_file(store_dir, monkeypatch):
    store.append(store_dir, "s", rows("a"))
    monkeypatch.setenv(faults.ENV, json.dumps([{"at": "store.tmp_written", "do": "raise"}]))
    with pytest.raises(InjectedFault):
        store.append(store_dir, "s", rows("b"))
    monkeypatch.delenv(faults.ENV)
    assert set(store.read(store_dir, "s")["trial_id"]) == {"a"}
    tmp = [p for p in store.study_dir(store_dir, "s").iterdir() if p.name.endswith(".tmp")]
    assert len(tmp) == 1
    assert store.repair(store_dir, "s") == tmp
    assert not tmp[0].exists()


def test_compaction_merges_batches_into_one_part(store_dir):
    expected = []
    for trial in "abcde":
        expected += rows(trial)
        store.append(store_dir, "s", rows(trial))
    assert store.compact(store_dir, "s", threshold=6) is None
    part = store.compact(store_dir, "s", threshold=5)
    assert parquet_files(store_dir) == [part.name]
    sources = json.loads(pq.read_table(part).schema.metadata[store.SOURCES_KEY])
    assert len(sources) == 5 and all(s.startswith("batch-") for s in sources)
    assert sorted_rows(store.read(store_dir, "s")).equals(sorted_rows(pd.DataFrame(expected)))
    store.append(store_dir, "s", rows("f"))
    second = store.compact(store_dir, "s")
    assert sorted(parquet_files(store_dir)) == sorted([part.name, second.name])
    assert len(store.read(store_dir, "s")) == 6 * 3


@pytest.mark.parametrize(
    "point", [{"at": "store.part_renamed"}, {"at": "store.batch_deleted", "nth": 2}]
)
def test_compaction_killed_before_its_deletes_neither_loses_nor_duplicates(
    store_dir, monkeypatch, point
):
    for trial in "abcd":
        store.append(store_dir, "s", rows(trial))
    expected = sorted_rows(store.read(store_dir, "s"))
    monkeypatch.setenv(faults.ENV, json.dumps([{**point, "do": "raise"}]))
    with pytest.raises(InjectedFault):
        store.compact(store_dir, "s")
    monkeypatch.delenv(faults.ENV)
    left = parquet_files(store_dir)
    assert sum(name.startswith("part-") for name in left) == 1
    assert sum(name.startswith("batch-") for name in left) >= 2  # covered, not yet deleted
    assert sorted_rows(store.read(store_dir, "s")).equals(expected)
    store.compact(store_dir, "s")  # deletes the covered batches, merges nothing twice
    assert [name[:5] for name in parquet_files(store_dir)] == ["part-"]
    assert sorted_rows(store.read(store_dir, "s")).equals(expected)


def test_four_readers_see_the_same_rows(store_dir):
    for study, trials in (("s", "abc"), ("t", "de")):
        for trial in trials:
            store.append(store_dir, study, rows(trial, study=study))
        store.compact(store_dir, study)
    store.append(store_dir, "s", rows("f"))  # one uncompacted batch too
    want = sorted_rows(store.read(store_dir))
    assert len(want) == 6 * 3 and set(want["study"]) == {"s", "t"}
    got = {
        "pandas": pd.read_parquet(store_dir),
        "pyarrow": ds.dataset(store_dir, format="parquet", partitioning="hive")
        .to_table()
        .to_pandas(),
        "duckdb": duckdb.sql(
            f"select * from read_parquet('{store_dir}/*/*.parquet', "
            "hive_partitioning=true, union_by_name=true)"
        ).df(),
        "polars": pl.read_parquet(f"{store_dir}/**/*.parquet", hive_partitioning=True).to_pandas(),
    }
    for reader, frame in got.items():
        pd.testing.assert_frame_equal(sorted_rows(frame), want, check_dtype=False, obj=reader)


def test_readers_named_in_the_readme_see_every_column_of_files_that_differ(store_dir):
    """Part files written after a resume or a new measure have other columns; each reader,
    with the README's command and no options, must still see every column and row."""
    store.append(store_dir, "s", rows("a"))
    store.compact(store_dir, "s")
    store.append(store_dir, "s", [{**r, "measure.l2": 2.5} for r in rows("b")])
    store.compact(store_dir, "s")
    store.append(store_dir, "s", [{**r, "measure.l2": None} for r in rows("c")])
    store.append(
        store_dir, "s", [{k: v for k, v in r.items() if k != "config"} for r in rows("d")]
    )
    folder = store.study_dir(store_dir, "s")
    want = store.read(store_dir, "s")
    assert len(want) == 4 * 3 and "measure.l2" in want and "config" in want
    got = {
        "duckdb": duckdb.sql(f"select * from '{folder}/*.parquet'").df(),
        "polars": pl.read_parquet(f"{folder}/*.parquet").to_pandas(),
        "pyarrow": ds.dataset(folder, format="parquet").to_table().to_pandas(),
        "pandas folder": pd.read_parquet(folder),
        "pandas store": pd.read_parquet(store_dir),
    }
    columns = sorted(set(want.columns) - {"study"})
    for reader, frame in got.items():
        assert sorted(set(frame.columns) - {"study"}) == columns, reader
        assert frame["measure.l2"].notna().sum() == 3, reader
        pd.testing.assert_frame_equal(
            sorted_rows(frame.assign(study="s")), sorted_rows(want), check_dtype=False, obj=reader
        )
    schemas = {pq.read_schema(p).remove_metadata() for p in folder.glob("*.parquet")}
    assert len(schemas) == 1  # one schema: any future reader sees every column too


def write_foreign_files(folder: Path) -> dict[str, str]:
    """Files the ledger must skip and never touch, by name, with a word of the reason."""
    good = store.append(folder.parent, folder.name.removeprefix("study="), rows("x"))
    (folder / "batch-garbage.parquet").write_bytes(b"not parquet at all" * 10)
    data = good.read_bytes()
    (folder / "batch-truncated.parquet").write_bytes(data[: len(data) // 2])
    table = pq.read_table(good)
    newer = table.replace_schema_metadata({store.VERSION_KEY: b"99"})
    pq.write_table(newer, folder / "batch-newer.parquet")
    pq.write_table(table.drop_columns("trial_id"), folder / "batch-nokey.parquet")
    bad_meta = table.replace_schema_metadata({store.VERSION_KEY: b"two"})
    pq.write_table(bad_meta, folder / "part-badmeta.parquet")
    good.unlink()
    return {
        "batch-garbage.parquet": "unreadable",
        "batch-truncated.parquet": "unreadable",
        "batch-newer.parquet": "newer",
        "batch-nokey.parquet": "trial_id",
        "part-badmeta.parquet": "metadata",
    }


def test_corrupt_and_foreign_files_are_reported_skipped_and_never_touched(store_dir):
    store.append(store_dir, "s", rows("a"))
    folder = store.study_dir(store_dir, "s")
    expected = write_foreign_files(folder)
    before = {
        name: ((folder / name).read_bytes(), os.stat(folder / name).st_mtime_ns)
        for name in expected
    }
    with pytest.warns(store.LedgerWarning) as caught:
        ledger = store.read(store_dir, "s")
    assert set(ledger["trial_id"]) == {"a"}
    messages = "\n".join(str(w.message) for w in caught)
    skipped = store.skipped_files(store_dir, "s")
    assert {p.name for p in skipped} == set(expected)
    for name, word in expected.items():
        assert str(folder / name) in messages
        assert word in skipped[folder / name]
    store.append(store_dir, "s", rows("b"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", store.LedgerWarning)
        store.compact(store_dir, "s")
        store.repair(store_dir, "s")
        assert set(store.read(store_dir, "s")["trial_id"]) == {"a", "b"}
    after = {
        name: ((folder / name).read_bytes(), os.stat(folder / name).st_mtime_ns)
        for name in expected
    }
    assert after == before


def test_older_schema_versions_stay_readable_and_compactable(store_dir):
    folder = store.study_dir(store_dir, "s")
    folder.mkdir(parents=True)
    v1 = pa.Table.from_pandas(pd.DataFrame(rows("a")), preserve_index=False)
    pq.write_table(
        v1.replace_schema_metadata({store.VERSION_KEY: b"1"}), folder / "batch-v1.parquet"
    )
    v0 = pd.DataFrame(rows("b")).drop(columns=["config"])  # no metadata, fewer columns
    v0.to_parquet(folder / "batch-v0.parquet", index=False)
    store.append(store_dir, "s", rows("c"))
    expected = sorted_rows(pd.DataFrame(rows("a") + rows("b") + rows("c")))
    assert sorted_rows(store.read(store_dir, "s")).equals(expected)
    store.compact(store_dir, "s")
    ledger = store.read(store_dir, "s")
    assert sorted_rows(ledger).equals(expected)
    assert ledger.loc[ledger["trial_id"] == "b", "config"].isna().all()


def test_column_types_that_disagree_between_files(store_dir):
    store.append(store_dir, "s", rows("a", lr=0.1))
    store.append(store_dir, "s", rows("b", lr=1))  # int where the other file has a float
    store.append(store_dir, "s", [{**r, "error": 3.5} for r in rows("c")])  # float vs text
    ledger = store.read(store_dir, "s")
    assert sorted(ledger["hp.lr"].unique()) == [0.1, 1.0]
    assert len(ledger) == 9
    store.compact(store_dir, "s")  # cannot merge text and floats: leaves the batches
    assert len(store.read(store_dir, "s")) == 9


def test_trial_states_and_final_rows():
    ledger = pd.DataFrame(
        rows("a", 0, "failed", steps=(-1,))
        + rows("a", 1, "done")
        + rows("b", 0, "diverged", steps=(0, 10))
        + rows("c", 0, "failed", steps=(-1,))
        + rows("c", 1, "timeout", steps=(-1,))
    ).sample(frac=1.0, random_state=0)  # order must not matter
    states = store.trial_states(ledger).sort_values("trial_id").reset_index(drop=True)
    assert states["trial_id"].tolist() == ["a", "b", "c"]
    assert states["status"].tolist() == ["done", "diverged", "timeout"]
    assert states["attempts"].tolist() == [2, 1, 2]
    final = store.final_rows(ledger)
    assert sorted(zip(final["trial_id"], final["attempt"], final["step"])) == [
        ("a", 1, 0),
        ("a", 1, 10),
        ("a", 1, 20),
        ("b", 0, 0),
        ("b", 0, 10),
        ("c", 1, -1),
    ]
    empty = store.read(Path("/nonexistent-shiftbench-store"), "s")
    assert empty.empty and store.trial_states(empty).empty


def test_measured_rows_merge_into_their_checkpoint_and_new_settings_replace_old_measures():
    def row(status, day, l2=None, path_norm=None, seed=0.0, errors=None, trial="a"):
        return {
            "study": "s",
            "trial_id": trial,
            "attempt": 0,
            "step": 20,
            "status": status,
            "measure.l2": l2,
            "measure.path_norm": path_norm,
            "measure_config.seed": seed,
            "measure_errors": errors,
            "end_time": pd.Timestamp(f"2026-01-0{day}"),
        }

    ledger = pd.DataFrame(
        [
            row("done", 1, l2=3.0, errors="sharpness: undefined"),
            row("done", 1, l2=4.0, trial="b"),
            row("measured", 2, path_norm=0.5, errors="pac_bayes: undefined"),
            row("measured", 2, path_norm=0.7, trial="b"),
            row("measured", 3, l2=3.5, seed=1.0, trial="b"),  # new settings: old values go
        ]
    )
    merged = store.merge_measured(ledger).set_index("trial_id")
    assert len(merged) == 2 and set(merged["status"]) == {"done"}
    assert merged.loc["a", ["measure.l2", "measure.path_norm"]].tolist() == [3.0, 0.5]
    assert merged.loc["a", "measure_errors"] == "sharpness: undefined; pac_bayes: undefined"
    assert merged.loc["b", "measure.l2"] == 3.5 and pd.isna(merged.loc["b", "measure.path_norm"])
    assert merged.loc["b", "measure_config.seed"] == 1.0

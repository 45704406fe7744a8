"""`shiftbench status` from the expansion cache: the same answer without loading a plugin,
and a new answer as soon as the study file or any source file changes."""

import subprocess
import sys

import yaml

from shiftbench.spec import expansion_cache
from shiftbench.spec.study import id_strings, load_study

STATUS = (
    "import sys\n"
    "from shiftbench.cli import main\n"
    "try:\n"
    "    main(['status', sys.argv[1], '--store', sys.argv[2]])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('heavy:', sorted({'torch', 'benchopt', 'ray'} & set(sys.modules)))\n"
)


def same(a: expansion_cache.Expansion, b: expansion_cache.Expansion) -> bool:
    return (a.name, a.retries, a.trial_numbers.tolist()) == (
        b.name,
        b.retries,
        b.trial_numbers.tolist(),
    )


def status(study, store_dir) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", STATUS, str(study), str(store_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_a_second_status_answers_from_the_cache_without_torch_or_benchopt(make_study, store_dir):
    path = make_study()
    first = status(path, store_dir)
    assert first[0] == "tiny: 4 trials" and first[-1] == "heavy: ['benchopt', 'torch']"
    second = status(path, store_dir)
    assert second[:-1] == first[:-1] and second[-1] == "heavy: []"
    # the study file changed: a new key, expanded again, never a stale answer
    path.write_text(path.read_text().replace("- 1\n", "- 1\n- 2\n"))
    assert yaml.safe_load(path.read_text())["seeds"] == [0, 1, 2]
    third = status(path, store_dir)
    assert third[0] == "tiny: 6 trials" and third[-1] == "heavy: ['benchopt', 'torch']"


def test_the_cached_expansion_is_the_studys_and_a_bad_cache_is_not_used(
    make_study, tmp_path, monkeypatch
):
    path = make_study()
    study = load_study(path)
    remembered = expansion_cache.remember(path, None, study)
    assert id_strings(remembered.trial_numbers) == [t.trial_id for t in study.trials()]
    assert same(expansion_cache.lookup(path, None), remembered)
    assert expansion_cache.lookup(path, 10) is None  # another --trial-limit, another key
    for entry in expansion_cache.cache_dir().glob("*.npz"):
        entry.write_text("{not a NumPy archive")
    assert expansion_cache.lookup(path, None) is None
    monkeypatch.setenv(expansion_cache.CACHE_ENV, str(path))  # a file: cannot be a folder
    assert same(expansion_cache.remember(path, None, study), remembered)
    assert expansion_cache.lookup(path, None) is None

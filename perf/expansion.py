"""Time and peak memory of answering a large study: ``status`` (cold: expanded; warm: from
the expansion cache), ``run --max-trials 1`` and ``report``, against the old path that built
every :class:`shiftbench.trials.trial.Trial` (``Study.trials()``, as ``status`` and ``plan`` did).

The study is a generated grid on the offline digits data (steps x widths x learning rates
x seeds) of 10,000, 100,000 and 1,000,000 trials. Each figure is one fresh
process: wall seconds as the user waits (start-up and imports included) and the process's
peak resident memory. The old path is measured up to ``--old-max`` trials (at a million it
takes minutes and gigabytes). Run: ``.venv/bin/python perf/expansion.py [--sizes
10000,100000,1000000] [--old-max 100000]`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PEAK = "import resource; print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
CLI = (
    "import sys\nfrom shiftbench.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
)
OLD = (
    "import sys\nfrom collections import Counter\nfrom shiftbench.spec.study import load_study\n"
    "study = load_study(sys.argv[1], int(sys.argv[2]))\n"
    "ids = [t.trial_id for t in study.trials()]\n"
    "print(len(ids), Counter('pending' for _ in ids))\n"
)


def study_file(folder: Path, trials: int) -> Path:
    """A grid of ``trials`` trials: 10 step counts x 10 widths x learning rates x 10 seeds."""
    lrs = trials // 1000
    raw = {
        "name": f"grid{trials}",
        "datasets": {"colored_digits": {"test_env": [2]}},
        "objective": {"steps": list(range(1, 11)), "model": "mlp", "width": list(range(4, 14))},
        "solvers": {"sgd": {"lr": [round(0.001 * (i + 1), 6) for i in range(lrs)]}},
        "search": {"kind": "grid"},
        "seeds": list(range(10)),
        "trial_limit": trials,
        "analyses": ["id_ood_table"],
    }
    path = folder / f"grid{trials}.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure(code: str, *args: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one fresh Python process running ``code``."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{PEAK}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    lines = done.stdout.splitlines()
    if done.returncode or not lines or not lines[-1].startswith("peak_kb"):
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return seconds, int(lines[-1].split()[1]) / 1024, "\n".join(lines[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--old-max", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            env = {
                **os.environ,
                "SHIFTBENCH_CACHE": str(folder / f"cache{n}"),
                "RAY_AUTH_MODE": "disabled",
            }
            path, store_dir = study_file(folder, n), str(folder / f"store{n}")
            row: dict[str, object] = {"trials": n}
            for label, command in (
                ("status cold", ["status", str(path), "--store", store_dir]),
                ("status warm", ["status", str(path), "--store", store_dir]),
                ("run 1", ["run", str(path), "--store", store_dir, "--max-trials", "1"]),
                ("run 1", ["run", str(path), "--store", store_dir, "--max-trials", "1"]),
                ("status after", ["status", str(path), "--store", store_dir]),
                ("report", ["report", str(path), "--store", store_dir]),
            ):
                extra = ["--workers", "0", "--quiet"] if command[0] == "run" else []
                seconds, peak, out = measure(CLI, *command, *extra, env=env)
                if command[0] == "status":
                    assert f"grid{n}: {n} trials" in out, out
                row[f"{label} s"], row[f"{label} MB"] = round(seconds, 2), round(peak)
            if n <= args.old_max:
                seconds, peak, out = measure(OLD, str(path), str(n), env=env)
                assert out.startswith(f"{n} "), out
                row["old status s"], row["old status MB"] = round(seconds, 2), round(peak)
                row["cold speed-up"] = round(seconds / row["status cold s"], 1)
                row["memory ratio"] = round(peak / row["status cold MB"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"on {os.cpu_count()} CPUs (a shared machine: other work may slow every figure)")


if __name__ == "__main__":
    main()

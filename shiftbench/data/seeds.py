"""DomainBed's seeds of the data: which draw of the data set, and which in/out split, a run gets.

In DomainBed (``domainbed/scripts/sweep.py`` and ``train.py``) a run's data (the shuffle into
environments, ColoredMNIST's label noise and colours) is drawn after
``torch.manual_seed(seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed))``, and
environment ``i`` is split into its out (held-out) and in parts with the seed
``seed_hash(trial_seed, i)`` (``misc.split_dataset``); ``test_envs`` is ``[t]`` for a main run
and ``sorted([t, v])`` for a leave-one-domain-out companion. So both follow the trial seed, and the
seed-to-seed spread includes resampling the data.

A DomainBed-style dataset plugin declares three parameters: ``fixed_data`` (default ``False``:
DomainBed's behaviour), ``data_seed`` and ``split_seed`` (default ``None``). The study
expansion (:func:`resolve`) fills them in per trial: with ``fixed_data: false`` the data seed
is DomainBed's hash and the split seed is the trial seed; with ``fixed_data: true`` they are
the values the study gives (0 when absent), the same for every trial. The resolved values are
the ledger's ``ds.data_seed`` and ``ds.split_seed`` columns, and ``ds.fixed_data`` says which
rule made them.
"""

from __future__ import annotations

import hashlib
from typing import Any

SEED_PARAMS = ("data_seed", "split_seed")


def seed_hash(*args: Any) -> int:
    """DomainBed's ``misc.seed_hash``: the md5 of ``str(args)``, as an integer mod 2**31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def split_seeds(split_seed: int, n_envs: int) -> tuple[int, ...]:
    """The in/out split seed of each environment: ``seed_hash(trial_seed, env_i)``, as in
    DomainBed's ``train.py`` (``split_seed`` plays the trial seed)."""
    return tuple(seed_hash(split_seed, i) for i in range(n_envs))


UNFIXED = "is derived from the trial seed as in DomainBed unless fixed_data: true"


def misplaced_seed(params: dict[str, Any]) -> str | None:
    """The seed parameter given while the data is not fixed (it would be ignored), if any."""
    if params.get("fixed_data", True):
        return None
    return next((key for key in SEED_PARAMS if params.get(key) is not None), None)


def resolve(
    domainbed_name: str,
    params: dict[str, Any],
    algorithm: str,
    hparams_seed: int,
    trial_seed: int,
) -> dict[str, Any]:
    """A trial's dataset parameters with ``data_seed``/``split_seed`` made concrete (see the
    module docstring); parameters of a dataset without ``fixed_data`` are returned as given."""
    if "fixed_data" not in params:
        return params
    if key := misplaced_seed(params):
        raise ValueError(f"{key} {UNFIXED}")
    resolved = dict(params)
    if params["fixed_data"]:
        for key in SEED_PARAMS:
            if key in params and params[key] is None:
                resolved[key] = 0
        return resolved
    if "data_seed" in params:
        # a leave-one-domain-out companion is DomainBed's run with two test environments
        val_env = params.get("val_env")
        companion = val_env is not None and val_env >= 0  # val_env 0 is a companion too
        test_envs = sorted({params["test_env"], *([val_env] if companion else [])})
        resolved["data_seed"] = seed_hash(
            domainbed_name, algorithm.upper(), test_envs, hparams_seed, trial_seed
        )
    if "split_seed" in params:
        resolved["split_seed"] = trial_seed
    return resolved

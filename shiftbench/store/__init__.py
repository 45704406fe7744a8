"""The ledger layer: Parquet rows (:mod:`~shiftbench.store.ledger`), the study lock
(:mod:`~shiftbench.store.lock`) and stored models (:mod:`~shiftbench.store.artifacts`).

``shiftbench.store.read(store, study=...)`` is the public way to load a study's ledger.
"""

from shiftbench.store.ledger import read

__all__ = ["read"]

"""Running one trial: its identity (``trial``), the runner that trains, evaluates and measures
it (``runner``), the long-lived Ray worker (``worker``), vectorized ensembles (``ensemble``),
fast-path settings (``accel``) and provenance."""

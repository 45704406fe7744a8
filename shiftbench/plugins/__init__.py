"""The file plugins (objective.py, solvers/, datasets/, measures/, analysis/): loading them by
path (``files``) and looking them up by name (``registry``)."""

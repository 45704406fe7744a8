"""The study file: its schema, validation and expansion into trials (``study``), search
spaces (``search``) and the cached expansion (``expansion_cache``)."""

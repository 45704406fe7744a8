"""On top of the ledger: the Markdown/LaTeX report built by the analyses (``build``), its HTML
site (``site``) and the Benchopt result export (``benchopt``)."""

"""On top of the ledger: the Markdown/LaTeX report built by the analyses (``build``), its HTML
site (``site``), the index of a folder of reports (``index``) and the Benchopt result export
(``benchopt``)."""

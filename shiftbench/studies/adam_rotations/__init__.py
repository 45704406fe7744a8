"""Study 3, Adam under rotations (Zhang, Maes et al. 2025): the rotated-basis optimizer
(``rotations``), its probes (``probes``) and the scope-ordering analysis (``analysis``)."""

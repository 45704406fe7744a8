"""Study 3, Adam under rotations (Zhang, Maes et al. 2025): its probes (``probes``; the
Hessian's in ``hessian``) and the scope-ordering analysis (``analysis``). The rotated-basis
optimizer it varies is the training loop's (:mod:`shiftbench.training.rotations`), a
hyperparameter of every solver."""

"""Training: the solver base class whose ``run`` is the training loop (``loop``), its
hot-loop pieces (``primitives``: seeding, minibatch sampling, evaluation) and the ERM/IRM
objectives (``algorithms``)."""

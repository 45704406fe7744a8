"""Study 2, generalization measures under shift (Jiang et al. 2020, Dziugaite et al. 2020):
the statistics (``stats``: the score table over ``correlation``, ``mutual_information``,
``sign_error``, ``selection_scores`` and ``intervals``) and the measure-by-target table
(``measure_table``)."""

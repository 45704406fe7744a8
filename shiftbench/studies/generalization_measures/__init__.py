"""Study 2, generalization measures under shift (Jiang et al. 2020, Dziugaite et al. 2020):
the statistics (``stats``) and the measure-by-target table (``measure_table``)."""

"""Running a study: planning what is pending, driving trials through an in-process or Ray
pool (``driver``), the persistent local cluster (``cluster``) and GPU packing (``packing``)."""

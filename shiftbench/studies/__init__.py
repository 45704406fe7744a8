"""Libraries of the three studies, one subpackage each, used by their plugins and analyses:
``optimizer_ood`` (Study 1), ``generalization_measures`` (Study 2), ``adam_rotations`` (Study 3).
The engine imports none of them."""

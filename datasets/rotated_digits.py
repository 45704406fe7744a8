"""RotatedDigits: DomainBed's RotatedMNIST recipe on scikit-learn's bundled 8x8 digits.

The digits are shuffled and split into six environments rotated by 0, 15,
30, 45, 60 and 75 degrees; ten classes.
"""

from shiftbench.data.digits import rotated_digit_environments
from shiftbench.data.recipe_plugin import RecipeDataset


class Dataset(RecipeDataset):
    name = "rotated_digits"
    domainbed_name = "RotatedDigits"
    num_classes = 10
    environments = ("0", "15", "30", "45", "60", "75")

    def recipe_environments(self, seed: int):
        return rotated_digit_environments(seed)

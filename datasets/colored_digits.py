"""ColoredDigits: DomainBed's ColoredMNIST recipe on scikit-learn's bundled 8x8 digits.

Binary label (digit < 5) with 25% label noise; the colour (red/green channel)
agrees with the noisy label except with probability 0.1, 0.2 and 0.9 in the
three environments, so colour is spuriously predictive except in the last.
"""

from shiftbench.data.digits import colored_digit_environments
from shiftbench.data.recipe_plugin import RecipeDataset


class Dataset(RecipeDataset):
    name = "colored_digits"
    domainbed_name = "ColoredDigits"
    num_classes = 2
    parameters = {**RecipeDataset.parameters, "test_env": [2]}
    environments = ("+90%", "+80%", "-90%")

    def recipe_environments(self, seed: int):
        return colored_digit_environments(seed)

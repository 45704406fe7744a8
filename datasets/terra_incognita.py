"""TerraIncognita (Beery et al. 2018): camera-trap locations 100, 38, 43, 46;
10 classes.

DomainBed's image-folder layout under ``<data_home>/`` (``shiftbench.data.folder_plugin``).
"""

from shiftbench.data.folder_plugin import FolderDataset


class Dataset(FolderDataset):
    name = "terra_incognita"
    dataset = "TerraIncognita"

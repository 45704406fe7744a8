"""OfficeHome (Venkateswara et al. 2017): art, clipart, product, real world;
65 classes.

DomainBed's image-folder layout under ``<data_home>/`` (``shiftbench.data.folder_plugin``).
"""

from shiftbench.data.folder_plugin import FolderDataset


class Dataset(FolderDataset):
    name = "office_home"
    dataset = "OfficeHome"

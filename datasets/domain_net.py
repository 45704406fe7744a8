"""DomainNet (Peng et al. 2019): clipart, infograph, painting, quickdraw,
real, sketch; 345 classes.

DomainBed's image-folder layout under ``<data_home>/`` (``shiftbench.data.folder_plugin``).
"""

from shiftbench.data.folder_plugin import FolderDataset


class Dataset(FolderDataset):
    name = "domain_net"
    dataset = "DomainNet"

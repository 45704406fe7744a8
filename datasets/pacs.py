"""PACS (Li et al. 2017): art painting, cartoon, photo, sketch; 7 classes.

DomainBed's image-folder layout under ``<data_home>/`` (``shiftbench.data.folder_plugin``).
"""

from shiftbench.data.folder_plugin import FolderDataset


class Dataset(FolderDataset):
    name = "pacs"
    dataset = "PACS"

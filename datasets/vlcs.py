"""VLCS (Fang et al. 2013): Caltech101, LabelMe, SUN09, VOC2007; 5 classes.

DomainBed's image-folder layout under ``<data_home>/`` (``shiftbench.data.folder_plugin``).
"""

from shiftbench.data.folder_plugin import FolderDataset


class Dataset(FolderDataset):
    name = "vlcs"
    dataset = "VLCS"

"""Long-tailed dataset builders (docs/method.md §4).

    from lt_registry.data import build_dataset, list_datasets
    ds = build_dataset("cifar10_lt", data_dir="~/data/cifar10", imb_factor=100)
    ds.train, ds.test, ds.class_counts   # -> [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]

Names: ``cifar10_lt``, ``cifar100_lt``, ``digits_lt`` (embedded, no download), ``imagenet_lt``, ``inat2018``,
``places_lt``; own data (docs/method.md §4.3): ``folder`` (alias ``imagefolder``: ``ROOT/<split>/<class>/<image>``),
``csv`` (``path,label`` lists), ``hfds/<hub id or local path>`` (a Hugging Face dataset: Hub id, save_to_disk or parquet
folder; :mod:`lt_registry.data.hfds`).
"""
from .arrays import ImageArrays, TensorImageDataset
from .builder import (
    DATASETS, DEFAULT_IMB_FACTOR, LTDataset, build_dataset, is_dataset, list_datasets, register_dataset,
)
from .cifar_lt import cifar_lt_indices, load_cifar, read_image_folder
from .csvlist import build_csv, read_csv_list
from .embedded import load_digits_arrays
from .files import IMAGE_EXTENSIONS, ImageFileDataset, load_rgb
from .folder import build_folder, list_image_folder
from .hfds import DatasetSourceError, HFImageDataset, build_hfds, load_hf_splits
from .holdout import holdout_counts, stratified_holdout
from .imbalanced_test import TEST_IMB_FACTORS, ImbalancedTestSet, imbalanced_test_indices
from .lists import ListFileDataset, read_list_file
from .transforms import CIFAR_MEAN, CIFAR_STD, CifarTestTransform, CifarTrainTransform

__all__ = [
    "build_dataset", "list_datasets", "is_dataset", "register_dataset", "DATASETS", "LTDataset",
    "DEFAULT_IMB_FACTOR", "cifar_lt_indices", "load_cifar", "read_image_folder", "load_digits_arrays",
    "imbalanced_test_indices", "ImbalancedTestSet", "TEST_IMB_FACTORS", "ListFileDataset", "read_list_file",
    "ImageArrays", "TensorImageDataset", "CifarTrainTransform", "CifarTestTransform", "CIFAR_MEAN", "CIFAR_STD",
    "ImageFileDataset", "load_rgb", "IMAGE_EXTENSIONS", "build_folder", "list_image_folder", "build_csv",
    "read_csv_list", "stratified_holdout", "holdout_counts", "build_hfds", "HFImageDataset", "load_hf_splits",
    "DatasetSourceError",
]

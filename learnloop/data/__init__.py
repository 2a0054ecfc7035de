"""Data layer: dataset registry and resolution order, in-memory tensors, the epoch loader, augmentation, splits."""

from learnloop.data.loader import EpochLoader, RandomBatches, TensorLoader, image_transform
from learnloop.data.registry import available, load, locate
from learnloop.data.splits import group_split, random_split, stratified_split
from learnloop.data.tabular import TabularData, load_adult, load_compas, load_german, to_numeric
from learnloop.data.vision import ImageData, load_digits, load_fashion_mnist, load_idx_folder

__all__ = [
    "EpochLoader", "RandomBatches", "TensorLoader", "image_transform", "available", "load", "locate", "random_split", "stratified_split",
    "group_split", "TabularData", "load_adult", "load_compas", "load_german", "to_numeric", "ImageData", "load_digits", "load_fashion_mnist", "load_idx_folder",
]

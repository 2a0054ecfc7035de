"""Evaluation protocols that combine models (feature extractors) and metrics, below the recipes.

`extractors`: the registry of feature extractors by name and the one rule that fits images to them;
`generative`: FID/KID/IS/PRDC of generated images beside the real-data floor and the noise ceiling.
"""

from learnloop.evaluation.extractors import (
    Extractor,
    ImageSpec,
    ModuleExtractor,
    extractor_names,
    get_extractor,
    prepare_images,
    register_extractor,
)
from learnloop.evaluation.generative import (
    FeatureConfig,
    GenerativeEvalConfig,
    evaluate_generated,
    evaluate_images,
    fid_to_reference,
    format_report,
    load_extractor,
    reference_report,
    reference_statistics,
)

__all__ = ["Extractor", "FeatureConfig", "GenerativeEvalConfig", "ImageSpec", "ModuleExtractor",
           "evaluate_generated", "evaluate_images", "extractor_names", "fid_to_reference", "format_report",
           "get_extractor", "load_extractor", "prepare_images", "reference_report", "reference_statistics",
           "register_extractor"]

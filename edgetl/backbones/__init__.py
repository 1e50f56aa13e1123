"""Backbones: a registry of YAML recipes (`models/*.yaml`) and one factory.

    list_models() -> names            get_spec(name) -> BackboneSpec
    create_model(name, num_classes=None, pretrained=True, weights=None) -> nn.Module

Importing this package does not import torch; building a model does.
"""

from edgetl.backbones.factory import create_model
from edgetl.backbones.registry import get_spec, list_models
from edgetl.backbones.spec import BackboneSpec

__all__ = ["BackboneSpec", "create_model", "get_spec", "list_models"]

"""The import path the reference configs name in ``model.class_path``."""

from ..lightning_module import Sam2MatcherLightningModel

__all__ = ["Sam2MatcherLightningModel"]

"""The import path the reference configs name in ``model.class_path``."""

from no_time_to_train.cli.lightning_module import Sam2MatcherLightningModel

__all__ = ["Sam2MatcherLightningModel"]

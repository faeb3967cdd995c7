"""The cone experiment: eNTKs of every checkpoint compared over all pairs."""

from twophase.core.cone.config import ConeConfig, ConeSettings
from twophase.core.cone.experiment import ConeResult, run_cone

__all__ = ["ConeConfig", "ConeResult", "ConeSettings", "run_cone"]

"""The chaos experiment: perturbed twins compared with their parent over (t0, t1)."""

from twophase.core.chaos.config import ChaosConfig, ChaosSettings
from twophase.core.chaos.experiment import ChaosResult, run_chaos

__all__ = ["ChaosConfig", "ChaosResult", "ChaosSettings", "run_chaos"]

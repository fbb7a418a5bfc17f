"""rltune: deep reinforcement learning training with hyperparameter tuning built in."""

from rltune.errors import UsageError

__all__ = ["UsageError", "load_agent", "train", "tune"]
__version__ = "0.1.0"


def __getattr__(name):
    # JAX loads on first use, so `rltune --help` and the tuning driver start fast.
    if name == "load_agent":
        from rltune.policy import load_agent

        return load_agent
    if name in ("train", "tune"):
        from rltune import api

        return getattr(api, name)
    raise AttributeError(name)

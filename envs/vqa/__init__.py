"""Visual question answering envs: rendered simple-shape questions and JSONL/Parquet VQA datasets.

Example:
    >>> import envs
    >>> env = envs.make("synthetic_vqa", task="count", seed=0)
    >>> obs, info = env.reset()
"""

from envs.vqa.base import VQAEnv
from envs.vqa.dataset import DatasetVQAConfig, DatasetVQAEnv
from envs.vqa.synthetic import SyntheticVQAConfig, SyntheticVQAEnv

__all__ = [
    "DatasetVQAConfig",
    "DatasetVQAEnv",
    "SyntheticVQAConfig",
    "SyntheticVQAEnv",
    "VQAEnv",
]

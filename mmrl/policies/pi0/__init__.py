"""A pi0-style vision-language-action policy: a Qwen2.5-VL prefix (``prefix``) conditioning the flow family's action
expert (``family``: ``policy.kind: pi0``)."""

from mmrl.policies.pi0.family import Pi0Config
from mmrl.policies.pi0.prefix import PrefixEncoder, prefix_for, set_trainable

__all__ = ["Pi0Config", "PrefixEncoder", "prefix_for", "set_trainable"]

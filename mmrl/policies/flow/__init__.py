"""Flow-matching action-chunk policies: the action expert, the RL log-likelihood estimators (Flow-Noise, Flow-SDE), the
chunk policy and critic shared with the diffusion family, and the family (``policy.kind: flow``)."""

from mmrl.policies.flow.estimators import ESTIMATORS, FlowNoise, FlowSDE
from mmrl.policies.flow.expert import ActionExpert, flow_matching_loss
from mmrl.policies.flow.policy import ChunkCritic, ChunkPolicy, behaviour_clone, positions

__all__ = [
    "ESTIMATORS",
    "ActionExpert",
    "ChunkCritic",
    "ChunkPolicy",
    "FlowNoise",
    "FlowSDE",
    "behaviour_clone",
    "flow_matching_loss",
    "positions",
]

"""The MLP family: Gaussian and categorical actor-critics for state-vector envs (classic control, proprioception)."""

from mmrl.policies.mlp.policy import CategoricalMLPPolicy, GaussianMLPPolicy, mlp_policy_for

__all__ = ["CategoricalMLPPolicy", "GaussianMLPPolicy", "mlp_policy_for"]

"""The algorithm core: advantage estimators, policy losses, KL to a reference, sampling filters.

Pure functions on tensors in name registries, selected from YAML::

    from mmrl.algos import advantages, losses
    adv = advantages.get("grpo")(rewards, group_ids)            # [B] -> [B]
    loss, stats = losses.get("ppo_clip")(logp, old_logp, adv, mask, agg="token-mean")

``advantages.FAMILY`` tells which call signature an estimator has (outcome / token / time / step); the shared learner
(``mmrl.algos.learner``) wires them together.
"""

from mmrl.algos import advantages, filters, kl, losses

__all__ = ["advantages", "filters", "kl", "losses"]

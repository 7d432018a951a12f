"""OpenVLA-style token action policies (``policy.kind: token_vla``): a VLM whose actions are ``n_bins`` uniform bins
per action dimension, each bin one vocabulary token (``bins``); sampling and every log-prob restricted to those tokens,
trained through the VLM's token path (``policy``); the family with its behaviour-cloning warm-up (``family``)."""

from mmrl.policies.token_vla.bins import ActionBins, bin_token_ids
from mmrl.policies.token_vla.policy import TokenVLACritic, TokenVLAPolicy, observation_prompt

__all__ = ["ActionBins", "TokenVLACritic", "TokenVLAPolicy", "bin_token_ids", "observation_prompt"]

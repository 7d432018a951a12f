"""The VLM family: a Hugging Face vision-language model that answers in text (Qwen2.5-VL class).

``policy`` (sampling with behaviour log-probs, learner log-probs, collate), ``chat`` (the prompt codec: chat template and
image-pad expansion), ``critic`` (the PPO value model), ``vppo`` (visual-dependency token weights), ``warmup`` (the
supervised format warm-up).
"""

from mmrl.policies.base import SamplingParams
from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS, Conversation, PromptEncoder, VisionInput, to_pil
from mmrl.policies.vlm.critic import VLMCritic
from mmrl.policies.vlm.policy import Generation, TurnRecord, VLMPolicy, response_length, token_ids, turns

__all__ = ["VISION_SPECIAL_TOKENS", "Conversation", "Generation", "PromptEncoder", "SamplingParams", "TurnRecord",
           "VLMCritic", "VLMPolicy", "VisionInput", "response_length", "to_pil", "token_ids", "turns"]

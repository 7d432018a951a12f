"""The VLM family: a Hugging Face vision-language model that answers in text (Qwen2.5-VL class).

``policy`` (sampling with behaviour log-probs, learner log-probs, collate), ``chat`` (the prompt codec: chat template and
image-pad expansion), ``critic`` (the PPO value model), ``vppo`` (visual-dependency token weights), ``warmup`` (the
supervised format warm-up).
"""

from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS, Conversation, PromptEncoder, VisionInput, to_pil
from mmrl.policies.vlm.policy import Generation, SamplingParams, VLMCritic, VLMPolicy

__all__ = ["VISION_SPECIAL_TOKENS", "Conversation", "Generation", "PromptEncoder", "SamplingParams", "VLMCritic",
           "VLMPolicy", "VisionInput", "to_pil"]

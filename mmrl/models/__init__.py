"""Model loading: any local Hugging Face image-text-to-text checkpoint, and the offline tiny builders."""

from mmrl.models.hf import load_policy, resolve_device, resolve_dtype

__all__ = ["load_policy", "resolve_device", "resolve_dtype"]

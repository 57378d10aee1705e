"""vlm_jax: Qwen2.5-VL in JAX, one functional model core for training (GRPO) and evaluation."""

from vlm_jax.config import ModelConfig, TextConfig, VisionConfig, get_config
from vlm_jax.config_json import from_hf, to_hf
from vlm_jax.hf import load_hf, save_hf
from vlm_jax.model import apply, forward, prepare_inputs, vision_embeddings
from vlm_jax.params import init_params, param_specs

__all__ = ["ModelConfig", "TextConfig", "VisionConfig", "apply", "forward", "from_hf",
           "get_config", "init_params", "load_hf", "param_specs", "prepare_inputs", "save_hf",
           "to_hf", "vision_embeddings"]

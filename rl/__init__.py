"""GRPO fine-tuning of Qwen2.5-VL-family models on the vlm_jax core."""

"""Robustness evaluation of Qwen2.5-VL-family models: benchmarks x prompt variants x metrics."""

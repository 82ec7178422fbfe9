"""The documentation builds: ``mkdocs build --strict`` over docs/ (English and Chinese pages, the API pages
generated from the docstrings by mkdocstrings). A broken link or anchor, a missing page or a docstring that
does not render fails this test; so does a README or docs page citing a repository file that does not exist."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("index", "api", "models", "data", "recipes", "performance", "differences", "testing")


def test_every_page_has_english_and_chinese_versions():
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"
        assert (ROOT / "docs" / f"{page}.zh.md").is_file(), f"docs/{page}.zh.md is missing"
    assert (ROOT / "README_zh.md").is_file()


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = ("bash scripts/setup_env.sh && .venv/bin/python -m pytest --doctest-modules "
                    "knowledge_distill_util tests")
    assert test_command in readme and test_command in ci
    assert "bash scripts/setup_env.sh && .venv/bin/python scripts/run_compression.py" in readme


def _cited_paths(text: str):
    """Repository paths written in backticks: `scripts/x.py`, `knowledge_distill_util/...`, `tests/x.py`."""
    pattern = r"`((?:scripts|tests|knowledge_distill_util|docs|\.ci)/[\w./-]*\w)`"
    return set(re.findall(pattern, text))


@pytest.mark.parametrize("name", ["README.md", "README_zh.md"] + [f"docs/{p}{s}.md" for p in PAGES for s in ("", ".zh")])
def test_cited_repository_files_exist(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    missing = sorted(p for p in _cited_paths(text) if not (ROOT / p).exists())
    assert not missing, f"{name} cites files that are not in the repository: {missing}"


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, GLOG_minloglevel="3")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("pred_distill", "register_recipe", "BertForSequenceClassification", "load_task_data"):
        assert name in api, f"the generated API page lacks {name}"


def test_the_recipes_page_lists_the_registered_recipes():
    """docs/recipes.md holds the registry's table (knowledge_distill_util.training.recipes.markdown_table)."""
    from knowledge_distill_util.training.recipes import markdown_table

    page = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert markdown_table() in page, "regenerate the table in docs/recipes.md from recipes.markdown_table()"

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
PAGES = ("index", "api", "models", "data", "recipes", "performance", "differences", "testing", "topk_cache")


def test_every_page_has_english_and_chinese_versions():
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"
        assert (ROOT / "docs" / f"{page}.zh.md").is_file(), f"docs/{page}.zh.md is missing"
    assert (ROOT / "README_zh.md").is_file()


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = ("bash scripts/setup_env.sh && .venv/bin/python -m pytest -n 3 --dist loadfile --doctest-modules "
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


def _documented_calls(text: str):
    """Every backticked ``name(params)`` of the operator modules in ``text``: (name, [param text])."""
    import knowledge_distill_util as package
    from knowledge_distill_util import distill, functional

    modules = (package, distill, functional)
    found = []
    for name, params in re.findall(r"`(?:functional\.)?(\w+)\(([^`()]*)\)`", text):
        if any(callable(getattr(m, name, None)) and not isinstance(getattr(m, name), type) for m in modules):
            found.append((name, [p.strip() for p in params.split(",") if p.strip()]))
    return found


def _signature_text(function) -> list:
    """``function``'s parameters as the docs write them: ``name``, ``name=default`` and ``*``."""
    import inspect

    out, starred = [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not starred:
            out.append("*")
            starred = True
        default = parameter.default
        out.append(parameter.name if default is parameter.empty else
                   f"{parameter.name}={json_like(default)}")
    return out


def json_like(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


@pytest.mark.parametrize("name", ["docs/api.md", "docs/api.zh.md"])
def test_api_page_signatures_match_the_code(name):
    """A signature the API page writes with its keywords (``soft_cross_entropy(predicts, targets, *, ...)``)
    is the code's, parameter for parameter with its default; one of plain names (``mseloss(rep1, rep2)``)
    names the code's leading parameters; a call (``layer_distill_loss(s, t, strategy="round")``) uses
    keywords the code has. So the prose cannot drift from the code."""
    from knowledge_distill_util import distill, functional

    calls = _documented_calls((ROOT / name).read_text(encoding="utf-8"))
    assert {"soft_cross_entropy", "layer_distill_loss", "att_distill_loss", "pred_distill"} <= {c for c, _ in calls}
    for function_name, params in calls:
        function = getattr(functional, function_name, None) or getattr(distill, function_name)
        code = _signature_text(function)
        where = f"{name}: {function_name}({', '.join(params)}) but the code has ({', '.join(code)})"
        names = [c.split("=")[0] for c in code if c != "*"]
        if "*" in params:  # a full signature
            assert params == code, where
        elif all(p.isidentifier() for p in params):  # plain names: the leading parameters
            assert params == names[:len(params)], where
        else:  # a call: its keywords exist
            assert all(p.split("=")[0].strip() in names for p in params if "=" in p), where


def _python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("name", ["README.md", "README_zh.md", "docs/index.md", "docs/index.zh.md"])
def test_python_snippets_of_the_readme_run(name, tmp_path):
    """Every ```python block of the README (and of the docs' home page, which repeats its quick start) runs
    as written, in a fresh process outside the repository."""
    blocks = _python_blocks((ROOT / name).read_text(encoding="utf-8"))
    assert blocks, f"{name} has no Python snippet"
    env = dict(os.environ, GLOG_minloglevel="3", PYTHONPATH=str(ROOT))
    for number, code in enumerate(blocks, start=1):
        done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{name}, Python snippet {number}:\n{code}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("name", ["README.md", "README_zh.md", "docs/index.md", "docs/index.zh.md"])
def test_stated_python_versions_are_requires_python(name):
    """The Python versions the set-up text states are pyproject.toml's requires-python."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    low, high = re.search(r'requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject).groups()
    text = (ROOT / name).read_text(encoding="utf-8")
    assert f"CPython 3.{low}–3.{int(high) - 1}" in text and "3.7" not in text

"""Write ``configs/<recipe>.yaml``: every registered recipe's full configuration, one commented key a line.

Each file holds every key of :class:`~knowledge_distill_util.config.schema.TrainConfig` with the value the
recipe resolves to (``kdu-train --recipe NAME --print_config`` shows the same values), grouped as the
dataclass groups them, and a comment saying what the key does; a key the recipe sets itself (the original
run script's setting) says so, with the package-wide default it replaces. ``tests/test_configs.py`` checks
that every file still equals the registered defaults, so run this again after changing a recipe::

    .venv/bin/python scripts/write_configs.py            # rewrite configs/
    .venv/bin/python scripts/write_configs.py --check    # exit 1 when a file is out of date
"""
import argparse
import dataclasses
import os
import sys

import yaml

from knowledge_distill_util._io import atomic_write_text
from knowledge_distill_util.config.schema import TrainConfig
from knowledge_distill_util.training.recipes import RECIPES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
HEADER = """# Recipe {name!r} ({title}): its full configuration, as `kdu-train --recipe {name} --print_config` prints it.
# Run it:   kdu-train --config configs/{name}.yaml --data_dir DIR --task_name TASK [--teacher_model DIR]
# Later flags override the file; copy it to start a recipe of your own. Keys marked "recipe setting" are the
# original toolkit's run-script values for this method (the package-wide default they replace is given).
# Written by scripts/write_configs.py; tests/test_configs.py keeps it equal to the registered recipe.
"""


def _scalar(value) -> str:
    """``value`` as a one-line YAML scalar or flow sequence."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def recipe_values(name: str) -> dict:
    """Every configuration key of recipe ``name``: field defaults overridden by the recipe's own."""
    base = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return dict(base, **RECIPES.get(name).defaults, recipe=name)


def render(name: str) -> str:
    """The text of ``configs/<name>.yaml``."""
    recipe = RECIPES.get(name)
    values = recipe_values(name)
    lines = [HEADER.format(name=name, title=recipe.title)]
    for spec in dataclasses.fields(TrainConfig):
        note = spec.metadata["help"]
        if spec.name in recipe.defaults and recipe.defaults[spec.name] != spec.default:
            note += f" (recipe setting; package default {_scalar(spec.default)})"
        lines.append(f"{spec.name}: {_scalar(values[spec.name])}  # {note}")
    return "\n".join(lines) + "\n"


#: ``configs/<name>.yaml`` files of the ``custom`` recipe that restate a named recipe in the custom form (the
#: logit terms, intermediate matches and hard-label weight of its distillation stage); the suite trains each
#: for a few steps beside the named recipe and compares the losses.
CUSTOM_FORMS = {
    "custom_minilm": ("minilm", "its first stage, `minilm` (the `pred` stage after it is another run of `custom` "
                                "with only a logit term)", dict(
        attention_output="scores", logit_terms=None, hard_label_weight=0.0, intermediate_matches=[
            {"layer_S": -1, "layer_T": -1, "feature": "attention", "loss": "attention_kl", "weight": 1.0},
            {"layer_S": -1, "layer_T": -1, "feature": "value", "loss": "relation_kl", "weight": 1.0,
             "options": {"num_relation_heads": 12}}])),
    "custom_distilbert": ("distilbert", "its one stage (the student starts from teacher layers 0, 2, 4, 7, 9, 11 "
                                        "of a 12-layer teacher: set student_init_layers for another depth)", dict(
        student_num_hidden_layers=6, student_hidden_size=768, student_intermediate_size=3072, student_init="teacher",
        student_init_layers=[0, 2, 4, 7, 9, 11], temperature=2.0, hard_label_weight=2.0,
        logit_terms=[{"loss": "kl_div", "weight": 5.0, "temperature": 2.0, "temperature_scaling": True}],
        intermediate_matches=[{"layer_S": -1, "layer_T": -1, "feature": "hidden", "loss": "hidden_cosine",
                               "weight": 1.0}])),
}
FORM_HEADER = """# Recipe {named!r} written as recipe 'custom': {what}.
# Run it:   kdu-train --config configs/{name}.yaml --data_dir DIR --task_name TASK --teacher_model DIR
# Keys marked "form setting" differ from recipe 'custom''s defaults. Written by scripts/write_configs.py;
# tests/training/test_recipe_configs.py trains it beside --recipe {named} and compares the losses.
"""


def render_form(name: str) -> str:
    """The text of ``configs/<name>.yaml`` for a :data:`CUSTOM_FORMS` entry."""
    named, what, overrides = CUSTOM_FORMS[name]
    values = dict(recipe_values("custom"), **overrides)
    lines = [FORM_HEADER.format(named=named, what=what, name=name)]
    for spec in dataclasses.fields(TrainConfig):
        note = spec.metadata["help"]
        if spec.name in overrides:
            note += f" (form setting; recipe 'custom' has {_scalar(recipe_values('custom')[spec.name])})"
        lines.append(f"{spec.name}: {_scalar(values[spec.name])}  # {note}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    stale = []
    for name in RECIPES.names() + list(CUSTOM_FORMS):
        path = os.path.join(CONFIGS, f"{name}.yaml")
        text = render_form(name) if name in CUSTOM_FORMS else render(name)
        current = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            atomic_write_text(path, text)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {os.path.relpath(path, REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

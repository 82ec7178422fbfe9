"""The recipe registry, and a recipe defined in this file alone running end to end through the same entry
point as the built-in ones."""
import json
import os

import oneflow.nn.functional as F
import pytest

from knowledge_distill_util.training import RECIPES, Recipe, Registry, StageSpec, register_recipe
from knowledge_distill_util.training.builders import bert_student
from knowledge_distill_util.training.kd_objectives import hard_label_loss
from knowledge_distill_util.training.objectives import Objective
from knowledge_distill_util.training.recipes import markdown_table
from knowledge_distill_util.cli.train import main
from training.conftest import TINY_STUDENT


def test_registry_refuses_duplicates_and_lists_names():
    registry = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)
    with pytest.raises(ValueError, match=r"^unknown recipe 'nope'; known recipes: teacher, baseline, kd, .*custom, "
                                         r"tinybert_general, distilbert_mlm$"):
        RECIPES.get("nope")
    with pytest.raises(ValueError, match=r"; did you mean 'tinybert'\?$"):
        RECIPES.get("tinybret")
    with pytest.raises(TypeError, match=r"a recipe name must be a non-empty string, got 3 \(int\)"):
        RECIPES.get(3)


def test_builtin_recipes_state_what_they_need():
    assert RECIPES.names() == ["teacher", "baseline", "kd", "bilstm", "bert_pkd", "tinybert", "theseus", "lstm",
                              "minilm", "minilm_v2", "distilbert", "pkd_patience", "multi_teacher_kd", "custom",
                              "tinybert_general", "distilbert_mlm"]
    assert RECIPES.get("minilm").teacher_outputs == ("logits", "scores", "values")   # logits: its pred stage
    assert not RECIPES.get("lstm").needs_teacher and not RECIPES.get("lstm").trains_teacher
    assert RECIPES.get("tinybert").teacher_outputs == ("logits", "reps", "atts")
    assert RECIPES.get("kd").teacher_outputs == ("logits",) and not RECIPES.get("kd").reads_layers
    assert not RECIPES.get("teacher").needs_teacher and RECIPES.get("bilstm").compared_with == "bilstm_baseline"
    table = markdown_table()
    assert all(f"| `{name}` |" in table for name in RECIPES.names())


# --------------------------------------------------------------- a new recipe, defined here alone
def cosine_kd_loss(args, student_logits, teacher_logits, student_reps, teacher_reps, labels):
    """CE + kd_beta * (1 - cos) between the last hidden states, averaged over tokens."""
    ce = hard_label_loss(student_logits, labels)
    cosine = 1.0 - F.cosine_similarity(student_reps[-1], teacher_reps[-1].detach(), dim=-1).mean()
    return {"loss": ce + args.kd_beta * cosine, "ce": ce, "cosine": cosine}


COSINE_KD = Recipe(
    "cosine_kd", "cosine KD",
    build=lambda ctx: bert_student(ctx.cfg, ctx.spec, ctx.teacher, ctx.reads_layers),
    stages=(StageSpec("cosine_kd", Objective(cosine_kd_loss, ("loss", "ce", "cosine"))),),
    defaults=dict(kd_beta=2.0, student_num_hidden_layers=1),
)


@pytest.fixture
def cosine_recipe():
    register_recipe(COSINE_KD)
    yield COSINE_KD
    RECIPES.unregister(COSINE_KD.name)


def test_a_recipe_defined_in_one_file_runs_end_to_end(workspace, cosine_recipe, tmp_path):
    assert cosine_recipe.teacher_outputs == ("logits", "reps") and cosine_recipe.reads_layers
    code = main(["--recipe", "cosine_kd", "--quick", "--data_dir", workspace["data"], "--task_name", workspace["task"],
                 "--teacher_model", workspace["teacher"], "--model_save_dir", str(tmp_path / "model"),
                 "--result_dir", str(tmp_path / "results"), *TINY_STUDENT])
    assert code == 0
    rows = (tmp_path / "results" / "cosine_kd_losses.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,lr,seconds,loss,ce,cosine" and len(rows) == 4
    assert json.loads((tmp_path / "results" / "config.json").read_text())["kd_beta"] == 2.0
    assert "accuracy" in json.loads((tmp_path / "results" / "results_eval.json").read_text())
    assert os.path.isfile(tmp_path / "model" / "model_config.json")


def test_a_new_recipe_with_a_configuration_trains_the_distillers_terms(workspace, tmp_path):
    """The same recipe with ``Objective(config=...)``: its stage trains the configuration's terms (their names in the
    loss log), its formula kept as the definition (docs/recipes.md, "Adding a recipe")."""
    from knowledge_distill_util.engine import DistillationConfig

    def config(args, regression):
        return DistillationConfig(logit_weight=0.0, hard_label_weight=1.0, intermediate_matches=[
            {"layer_S": -1, "layer_T": -1, "feature": "hidden", "loss": "hidden_cosine", "weight": args.kd_beta}])

    objective = Objective(cosine_kd_loss, ("loss", "ce", "cosine"), config)
    recipe = Recipe("cosine_kd_configured", "cosine KD", COSINE_KD.build,
                    (StageSpec("cosine_kd", objective),), defaults=COSINE_KD.defaults)
    register_recipe(recipe)
    try:
        code = main(["--recipe", recipe.name, "--quick", "--data_dir", workspace["data"], "--task_name",
                     workspace["task"], "--teacher_model", workspace["teacher"], "--model_save_dir",
                     str(tmp_path / "model"), "--result_dir", str(tmp_path / "results"), "--do_eval", "false",
                     *TINY_STUDENT])
    finally:
        RECIPES.unregister(recipe.name)
    assert code == 0
    rows = (tmp_path / "results" / "cosine_kd_losses.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,lr,seconds,loss,hard_label,match0_hidden_cosine" and len(rows) == 4

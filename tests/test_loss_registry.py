"""The loss registry (issue 11, item 13): built-in names are the function names, duplicates are refused,
failed lookups list the known names."""
import oneflow as flow
import pytest

import knowledge_distill_util as kdu
from knowledge_distill_util import available_losses, functional, get_loss, register_loss
from knowledge_distill_util import registry

BUILTIN = ["attention_kl", "attention_mse", "fsp_loss", "hidden_cosine", "hidden_mse", "kl_div", "mmd_loss",
           "pkd_loss", "relation_kl", "soft_cross_entropy"]


@pytest.fixture
def clean_registry():
    """Registrations made by a test are removed afterwards."""
    before = registry._LOSSES.snapshot()
    yield
    registry._LOSSES.restore(before)


def test_top_level_exports():
    assert kdu.get_loss is get_loss and kdu.register_loss is register_loss and kdu.available_losses is available_losses
    assert {"get_loss", "register_loss", "available_losses"} <= set(kdu.__all__)


def test_builtin_names_are_the_function_names():
    assert set(BUILTIN) <= set(available_losses())
    assert available_losses() == sorted(available_losses())
    for name in BUILTIN:
        assert get_loss(name) is getattr(functional, name)


def test_register_and_get(clean_registry):
    @register_loss("test_l1")
    def l1(student, teacher, *, mask=None):
        return (student - teacher).abs().mean()

    assert get_loss("test_l1") is l1 and "test_l1" in available_losses()
    assert get_loss("test_l1")(flow.ones(2), flow.zeros(2)).item() == 1.0


def test_duplicates_are_refused_and_nothing_is_replaced(clean_registry):
    with pytest.raises(ValueError, match=r"a loss named 'kl_div' is already registered "
                                         r"\(knowledge_distill_util.functional.kl_div\); register yours under another"):
        register_loss("kl_div")
    register_loss("test_once")(lambda s, t: s)
    with pytest.raises(ValueError, match=r"a loss named 'test_once' is already registered"):
        register_loss("test_once")(lambda s, t: t)
    assert get_loss("kl_div") is functional.kl_div


def test_the_decorator_refuses_a_name_taken_in_between(clean_registry):
    decorate = register_loss("test_race")
    register_loss("test_race")(lambda s, t: s)
    with pytest.raises(ValueError, match=r"'test_race' is already registered"):
        decorate(lambda s, t: t)


def test_failed_lookup_lists_the_known_names():
    with pytest.raises(ValueError, match=r"unknown loss 'kl'; known losses: attention_kl, attention_mse, .*kl_div"):
        get_loss("kl")


@pytest.mark.parametrize("bad", [None, "", 3])
def test_bad_names(bad, clean_registry):
    with pytest.raises(TypeError, match=r"a loss name must be a non-empty string"):
        get_loss(bad)
    with pytest.raises(TypeError, match=r"a loss name must be a non-empty string"):
        register_loss(bad)


def test_decorating_a_non_callable(clean_registry):
    with pytest.raises(TypeError, match=r"register_loss\('test_x'\) decorates a callable, got int"):
        register_loss("test_x")(3)
    assert "test_x" not in available_losses()


def test_failed_lookup_suggests_the_closest_name():
    with pytest.raises(ValueError, match=r"^unknown loss 'kl_dvi'; known losses: .*; did you mean 'kl_div'\?$"):
        get_loss("kl_dvi")

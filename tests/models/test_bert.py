"""BERT teacher/student builders: shapes, eager vs nn.Graph, probs vs scores, fit_dense, padding,
student initialisation from teacher layers, save/load, and every error message.

The forward's numbers are checked against a numpy float64 BERT in ``test_pretrained.py``; here the
references are numpy computations on the model's outputs and weights (softmax, a linear map, copies).
"""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import (
    BertForSequenceClassification,
    BertStudentForSequenceClassification,
    fit_dense,
    init_student_from_teacher,
    load_model,
    save_model,
)
from knowledge_distill_util.models import DISTILBERT_LAYERS, check_student_teacher

SMALL = dict(vocab_size=60, hidden_size=16, num_hidden_layers=4, num_attention_heads=4, intermediate_size=24,
             max_position_embeddings=12)
GRAPH = dict(rtol=1e-5, atol=1e-5)


def inputs(batch=3, length=7, seed=0, valid=(7, 4, 2)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 60, size=(batch, length))
    mask = (np.arange(length)[None, :] < np.array(valid)[:, None]).astype(np.int64)
    ids = ids * mask
    types = (np.arange(length)[None, :] >= 3).astype(np.int64).repeat(batch, 0) * mask
    return flow.tensor(ids), flow.tensor(mask), flow.tensor(types)


def model(**kwargs):
    flow.manual_seed(0)
    return BertForSequenceClassification(**dict(SMALL, **kwargs)).eval()


def numpy_all(outputs):
    logits, reps, atts = outputs
    return logits.numpy(), [r.numpy() for r in reps], [a.numpy() for a in atts]


@pytest.mark.parametrize("kwargs, width", [({}, 16), ({"is_student": True, "fit_size": 20}, 20),
                                           ({"label_num": 1}, 16), ({"label_num": 5}, 16)])
def test_output_shapes(kwargs, width):
    logits, reps, atts = model(**kwargs)(*inputs())
    assert tuple(logits.shape) == (3, kwargs.get("label_num", 2))
    assert len(reps) == 5 and all(tuple(r.shape) == (3, 7, width) for r in reps)
    assert len(atts) == 4 and all(tuple(a.shape) == (3, 4, 7, 7) for a in atts)


def test_student_class_projects_with_shared_fit_dense():
    flow.manual_seed(0)
    student = BertStudentForSequenceClassification(**dict(SMALL, hidden_size=8, num_attention_heads=2,
                                                          fit_size=16)).eval()
    assert student.is_student and isinstance(student.fit_dense, flow.nn.Linear)
    assert tuple(student.fit_dense.weight.shape) == (16, 8)
    plain = BertForSequenceClassification(**dict(SMALL, hidden_size=8, num_attention_heads=2)).eval()
    plain.load_state_dict({k: v for k, v in student.state_dict().items() if not k.startswith("fit_dense")})
    _, reps, _ = student(*inputs())
    _, hidden, _ = plain(*inputs())
    weight, bias = student.fit_dense.weight.numpy(), student.fit_dense.bias.numpy()
    for rep, h in zip(reps, hidden):  # every entry, embedding output included, through the same map
        np.testing.assert_allclose(rep.numpy(), h.numpy().astype(np.float64) @ weight.T + bias,
                                   rtol=1e-5, atol=1e-5)


def test_fit_dense_helper():
    layer = fit_dense(312, 768)
    assert isinstance(layer, flow.nn.Linear) and tuple(layer.weight.shape) == (768, 312)


def test_teacher_has_no_fit_dense_and_student_always_projects():
    assert model().fit_dense is None
    same = model(is_student=True, fit_size=16)
    assert tuple(same.fit_dense.weight.shape) == (16, 16)  # the original projected even at equal sizes


def test_scores_softmax_equals_probs_and_padding_is_masked():
    probs_model = model()
    scores_model = model(attention_output="scores")
    scores_model.load_state_dict(probs_model.state_dict())
    ids, mask, types = inputs()
    logits_p, reps_p, probs = numpy_all(probs_model(ids, mask, types))
    logits_s, reps_s, scores = numpy_all(scores_model(ids, mask, types))
    np.testing.assert_array_equal(logits_p, logits_s)
    padded = mask.numpy()[:, None, None, :] == 0
    for p, s in zip(probs, scores):
        s64 = s.astype(np.float64)
        e = np.exp(s64 - s64.max(-1, keepdims=True))
        np.testing.assert_allclose(p, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
        assert np.all(np.broadcast_to(padded, s.shape) == (s <= -100))  # TinyBERT's rule sees the padding
        assert np.all(p[np.broadcast_to(padded, p.shape)] < 1e-30)


def test_padding_does_not_change_valid_positions():
    net = model()
    ids, mask, types = inputs(valid=(7, 4, 2))
    logits, reps, _ = numpy_all(net(ids, mask, types))
    short_logits, short_reps, _ = numpy_all(net(ids[1:2, :4], mask[1:2, :4], types[1:2, :4]))
    np.testing.assert_allclose(logits[1:2], short_logits, rtol=1e-5, atol=1e-5)
    for rep, short in zip(reps, short_reps):
        np.testing.assert_allclose(rep[1:2, :4], short, rtol=1e-5, atol=1e-5)


def test_token_type_ids_matter():
    net = model()
    ids, mask, types = inputs()
    a = net(ids, mask, types)[1][0].numpy()
    b = net(ids, mask, flow.zeros_like(types))[1][0].numpy()
    assert not np.allclose(a[0, 3:], b[0, 3:]) and np.allclose(a[:, :3], b[:, :3])


class Forward(flow.nn.Graph):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def build(self, ids, mask, types):
        return self.net(ids, mask, types)


@pytest.mark.graph
@pytest.mark.parametrize("kwargs", [{}, {"attention_output": "scores", "is_student": True, "fit_size": 8}])
def test_graph_equals_eager(kwargs):
    net = model(**kwargs)
    eager = numpy_all(net(*inputs()))
    graph = numpy_all(Forward(net)(*inputs()))
    np.testing.assert_allclose(graph[0], eager[0], **GRAPH)
    for g, e in zip(graph[1] + graph[2], eager[1] + eager[2]):
        np.testing.assert_allclose(g, e, **GRAPH)


@pytest.mark.graph
def test_training_step_in_graph_matches_eager():
    ids, mask, types = inputs()
    labels = flow.tensor([0, 1, 1])

    def step_loss(net):
        logits, reps, _ = net(ids, mask, types)
        return flow.nn.functional.cross_entropy(logits, labels) + 0.1 * (reps[-1] ** 2).mean()

    eager_net, graph_net = model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), model(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    eager_net.train()
    graph_net.train()
    eager_opt = flow.optim.SGD(eager_net.parameters(), lr=0.1)
    graph_opt = flow.optim.SGD(graph_net.parameters(), lr=0.1)

    class Train(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.net = graph_net
            self.add_optimizer(graph_opt)

        def build(self):
            loss = step_loss(self.net)
            loss.backward()
            return loss

    train = Train()
    for _ in range(2):
        eager_loss = step_loss(eager_net)
        eager_loss.backward()
        eager_opt.step()
        eager_opt.zero_grad()
        graph_loss = train()
        np.testing.assert_allclose(graph_loss.numpy(), eager_loss.numpy(), **GRAPH)
    for (name, e), g in zip(eager_net.state_dict().items(), graph_net.state_dict().values()):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_dropout_only_in_training_mode():
    net = model(hidden_dropout_prob=0.5)
    first = net(*inputs())[0].numpy()
    np.testing.assert_array_equal(first, net(*inputs())[0].numpy())
    net.train()
    assert not np.allclose(net(*inputs())[0].numpy(), net(*inputs())[0].numpy())


# --- student initialisation from teacher layers ------------------------------------------------------
@pytest.mark.parametrize("layers", [[0, 1], [1, 3], [3, 0]])
def test_init_student_from_teacher_copies_exactly(layers):
    teacher = model()
    flow.manual_seed(1)
    student = BertStudentForSequenceClassification(**dict(SMALL, num_hidden_layers=2, fit_size=16))
    fit_before = student.fit_dense.weight.numpy().copy()
    assert init_student_from_teacher(student, teacher, layers) is student
    t, s = teacher.state_dict(), student.state_dict()
    for name, value in s.items():
        if name.startswith("encoder.layer."):
            index = int(name.split(".")[2])
            source = name.replace(f"encoder.layer.{index}.", f"encoder.layer.{layers[index]}.", 1)
            np.testing.assert_array_equal(value.numpy(), t[source].numpy(), err_msg=name)
        elif not name.startswith("fit_dense"):
            np.testing.assert_array_equal(value.numpy(), t[name].numpy(), err_msg=name)
    np.testing.assert_array_equal(student.fit_dense.weight.numpy(), fit_before)


def test_distilbert_layers_on_a_12_layer_teacher():
    teacher = model(num_hidden_layers=12)
    student = model(num_hidden_layers=6)
    init_student_from_teacher(student, teacher, list(DISTILBERT_LAYERS))
    np.testing.assert_array_equal(student.encoder.layer[3].output.dense.weight.numpy(),
                                  teacher.encoder.layer[7].output.dense.weight.numpy())


def test_init_student_errors():
    teacher = model()
    student = model(num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"layers has 3 entries \[0, 1, 2\] but the student has 2 layers"):
        init_student_from_teacher(student, teacher, [0, 1, 2])
    with pytest.raises(ValueError, match=r"holds 4, not a teacher layer index in \[0, 3\]"):
        init_student_from_teacher(student, teacher, [0, 4])
    with pytest.raises(TypeError, match=r"layers must be a list of teacher layer indices, got int"):
        init_student_from_teacher(student, teacher, 2)
    narrow = model(num_hidden_layers=2, hidden_size=8, num_attention_heads=2)
    before = narrow.state_dict()["embeddings.word_embeddings.weight"].numpy().copy()
    with pytest.raises(ValueError, match=r"embeddings\.word_embeddings\.weight: the student's shape \(60, 8\) "
                                         r"differs from the teacher's \(60, 16\)"):
        init_student_from_teacher(narrow, teacher, [0, 1])
    np.testing.assert_array_equal(narrow.state_dict()["embeddings.word_embeddings.weight"].numpy(), before)
    with pytest.raises(TypeError, match=r"teacher must be a BertForSequenceClassification-like model"):
        init_student_from_teacher(student, flow.nn.Linear(2, 2), [0, 1])


def test_check_student_teacher_fit_size_and_heads():
    teacher = model()
    check_student_teacher(model(hidden_size=8, num_attention_heads=4, is_student=True, fit_size=16), teacher)
    with pytest.raises(ValueError, match=r"width 12 \(hidden_size=8, is_student=True, fit_size=12\) but the "
                                         r"teacher's hidden_size is 16; build the student with is_student=True, "
                                         r"fit_size=16"):
        check_student_teacher(model(hidden_size=8, num_attention_heads=4, is_student=True, fit_size=12), teacher)
    with pytest.raises(ValueError, match=r"width 8 \(hidden_size=8, is_student=False"):
        check_student_teacher(model(hidden_size=8, num_attention_heads=4), teacher)
    with pytest.raises(ValueError, match=r"the student has 2 attention heads but the teacher has 4"):
        check_student_teacher(model(hidden_size=8, num_attention_heads=2, is_student=True, fit_size=16), teacher)
    check_student_teacher(model(hidden_size=8, num_attention_heads=2, is_student=True, fit_size=16), teacher,
                          attentions=False)


# --- save / load ----------------------------------------------------------------------------------
def test_save_load_round_trip_and_overwrite(tmp_path):
    source = model(is_student=True, fit_size=8)
    path = tmp_path / "student"
    assert save_model(source, path) == str(path)
    save_model(source, path)  # replacing an existing save works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no staging directory left behind
    flow.manual_seed(5)
    target = BertForSequenceClassification(**dict(SMALL, is_student=True, fit_size=8)).eval()
    assert load_model(target, path) is target
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    expected, got = numpy_all(source(*inputs())), numpy_all(target(*inputs()))
    np.testing.assert_array_equal(expected[0], got[0])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no saved model at .*nothing.*save_model\(model, path\)"):
        load_model(model(), tmp_path / "nothing")
    save_model(model(is_student=True, fit_size=8), tmp_path / "student")
    with pytest.raises(ValueError, match=r"missing \[\]; unexpected \['fit_dense\.bias', 'fit_dense\.weight'\]"):
        load_model(model(), tmp_path / "student")
    with pytest.raises(ValueError, match=r"'fit_dense\.bias' .* has shape \(8,\) but the model's has shape \(9,\)"):
        load_model(model(is_student=True, fit_size=9), tmp_path / "student")


# --- validation -----------------------------------------------------------------------------------
def test_input_errors():
    net = model()
    ids, mask, types = inputs()
    with pytest.raises(TypeError, match=r"input_ids must have an integer \(int32/int64\) dtype, got oneflow\.float32"):
        net(ids.float(), mask, types)
    with pytest.raises(TypeError, match=r"input_ids must be a oneflow\.Tensor, got ndarray"):
        net(ids.numpy(), mask, types)
    with pytest.raises(ValueError, match=r"input_ids must have shape \[batch, seq_length\], got shape \(7,\)"):
        net(ids[0], mask[0], types[0])
    with pytest.raises(ValueError, match=r"sequence length 13 but max_position_embeddings is 12"):
        net(*(flow.ones(1, 13, dtype=flow.int64) for _ in range(3)))
    with pytest.raises(ValueError, match=r"input_mask has shape \(3, 6\) but input_ids has shape \(3, 7\)"):
        net(ids, mask[:, :6], types)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(2, 7\) but input_ids has shape \(3, 7\)"):
        net(ids, mask, types[:2])
    with pytest.raises(TypeError, match=r"token_type_ids must have an integer .* got oneflow\.float32"):
        net(ids, mask, types.float())
    np.testing.assert_array_equal(net(ids, mask.float(), types)[0].numpy(), net(ids, mask, types)[0].numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_size": 10}, r"hidden_size \(10\) must be a multiple of num_attention_heads \(4\)"),
    ({"hidden_act": "swish"}, r"hidden_act must be one of \['gelu', .*\], got 'swish'"),
    ({"attention_output": "logits"}, r"attention_output must be one of \('probs', 'scores'\), got 'logits'"),
    ({"label_num": 0}, r"label_num must be a positive integer, got 0"),
    ({"hidden_dropout_prob": 1.0}, r"hidden_dropout_prob must be a number in \[0, 1\), got 1\.0"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BertForSequenceClassification(**dict(SMALL, **kwargs))


@pytest.mark.skipif(not flow.cuda.is_available(), reason="needs a CUDA device; this machine has none")
def test_cuda_equals_cpu():
    net = model(attention_output="scores", is_student=True, fit_size=8)
    expected = numpy_all(net(*inputs()))
    got = numpy_all(net.to("cuda")(*(t.to("cuda") for t in inputs())))
    for g, e in zip([got[0]] + got[1] + got[2], [expected[0]] + expected[1] + expected[2]):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_gelu_both_paths_equal_numpy_erf_gelu_and_its_derivative():
    import math

    from knowledge_distill_util.models.bert import HIDDEN_ACTS

    erf = np.vectorize(math.erf)
    x = flow.tensor(np.linspace(-8, 8, 401, dtype=np.float32), requires_grad=True)
    x64 = x.detach().numpy().astype(np.float64)
    cdf = 0.5 * (1 + erf(x64 / math.sqrt(2)))
    trained = HIDDEN_ACTS["gelu"](x)  # the composed path (a gradient is needed)
    trained.sum().backward()
    inferred = HIDDEN_ACTS["gelu"](x.detach())  # the fused kernel
    np.testing.assert_allclose(trained.detach().numpy(), x64 * cdf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inferred.numpy(), x64 * cdf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), cdf + x64 * np.exp(-x64 ** 2 / 2) / math.sqrt(2 * math.pi),
                               rtol=1e-5, atol=1e-6)


def test_layer_norm_equals_oneflow_layer_norm_values_and_gradients():
    from knowledge_distill_util.models.bert import LayerNorm

    rng = np.random.default_rng(3)
    ours, theirs = LayerNorm(24, 1e-12), flow.nn.LayerNorm(24, eps=1e-12)
    weight = rng.standard_normal(24).astype(np.float32)
    with flow.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(flow.tensor(weight))
            module.bias.copy_(flow.tensor(np.full(24, 0.5, np.float32)))
    data = (rng.standard_normal((3, 5, 24)) * 4 + 7).astype(np.float32)
    upstream = flow.tensor(rng.standard_normal((3, 5, 24)).astype(np.float32))
    results = []
    for module in (ours, theirs):
        x = flow.tensor(data, requires_grad=True)
        y = module(x)
        (y * upstream).sum().backward()
        results.append([y.detach().numpy(), x.grad.numpy(), module.weight.grad.numpy(), module.bias.grad.numpy()])
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert sorted(ours.state_dict()) == ["bias", "weight"]  # the constant vectors are not saved

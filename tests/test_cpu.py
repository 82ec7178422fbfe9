"""OneFlow's bundled OpenBLAS gets the CPU's kernel set before OneFlow loads (issue 23, item 1)."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from knowledge_distill_util._cpu import choose_openblas_coretype, set_openblas_coretype

_INTEL_FLAGS = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx"

# First lines of /proc/cpuinfo (the fields the rule reads) of several CPUs, and the kernel set each gets.
CPUS = {
    "AMD EPYC Zen 4 (this machine's kind: AVX-512, unknown to OpenBLAS 0.3.3)": (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512dq avx512bw avx512vl\n", "Zen"),
    "AMD EPYC Zen 2 (AVX2, no AVX-512)": (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nflags\t\t: sse2 fma avx avx2\n", "Zen"),
    "Hygon Dhyana (a Zen licensee)": ("vendor_id\t: HygonGenuine\nflags\t\t: sse2 fma avx avx2\n", "Zen"),
    "Intel Xeon Skylake-SP (AVX-512)": (
        f"vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nflags\t\t: {_INTEL_FLAGS} fma avx2 avx512f\n",
        "SkylakeX"),
    "Intel Core Haswell (AVX2)": (f"vendor_id\t: GenuineIntel\nflags\t\t: {_INTEL_FLAGS} fma avx2\n", "Haswell"),
    "Zhaoxin / VIA with AVX2": ("vendor_id\t: CentaurHauls\nflags\t\t: sse2 avx fma avx2\n", "Haswell"),
    "Intel Sandy Bridge (AVX, no AVX2)": (f"vendor_id\t: GenuineIntel\nflags\t\t: {_INTEL_FLAGS}\n", None),
    "AVX2 without FMA (a hypervisor hiding FMA)": ("vendor_id\t: AuthenticAMD\nflags\t\t: sse2 avx avx2\n", None),
    "AMD Opteron (SSE only)": ("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 sse3\n", None),
    "aarch64 (no vendor_id, no flags)": ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n", None),
    "no /proc/cpuinfo": ("", None),
}


@pytest.mark.parametrize("name", list(CPUS))
def test_the_kernel_set_follows_vendor_and_flags(name):
    text, expected = CPUS[name]
    assert choose_openblas_coretype(text) == expected


def test_only_the_first_processor_is_read():
    first = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: sse2 avx fma avx2\n\n"
    second = "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: sse2\n\n"
    assert choose_openblas_coretype(first + second) == "Haswell"


@pytest.fixture
def zen_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUS["AMD EPYC Zen 2 (AVX2, no AVX-512)"][0])
    return str(path)


def test_an_unset_or_empty_variable_gets_the_choice_logged_once(zen_cpuinfo, caplog):
    for environ in ({}, {"OPENBLAS_CORETYPE": ""}, {"KDU_OPENBLAS_CORETYPE": "AUTO"}):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="knowledge_distill_util._cpu"):
            assert set_openblas_coretype(environ, zen_cpuinfo, modules={}) == "Zen"
        assert environ["OPENBLAS_CORETYPE"] == "Zen"
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.INFO, f"OPENBLAS_CORETYPE=Zen set for OneFlow's bundled OpenBLAS (from {zen_cpuinfo}; "
                           "KDU_OPENBLAS_CORETYPE=keep leaves it unset)")]


@pytest.mark.parametrize("environ, note", [
    ({"OPENBLAS_CORETYPE": "Haswell"}, "OPENBLAS_CORETYPE=Haswell set by the user: kept"),
    ({"KDU_OPENBLAS_CORETYPE": "keep"}, "KDU_OPENBLAS_CORETYPE=keep: OPENBLAS_CORETYPE left as it is"),
    ({"KDU_OPENBLAS_CORETYPE": " Keep ", "OPENBLAS_CORETYPE": "Prescott"},
     "KDU_OPENBLAS_CORETYPE=keep: OPENBLAS_CORETYPE left as it is"),
])
def test_a_user_value_and_the_opt_out_are_kept(zen_cpuinfo, caplog, environ, note):
    before = dict(environ)
    with caplog.at_level(logging.DEBUG, logger="knowledge_distill_util._cpu"):
        assert set_openblas_coretype(environ, zen_cpuinfo, modules={}) is None
    assert environ == before
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.DEBUG, note)]


def test_after_oneflow_it_is_too_late_and_only_noted(zen_cpuinfo, caplog):
    environ = {}
    with caplog.at_level(logging.DEBUG, logger="knowledge_distill_util._cpu"):
        assert set_openblas_coretype(environ, zen_cpuinfo, modules={"oneflow": object()}) is None
    assert environ == {}
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert caplog.records[0].getMessage().startswith("OneFlow was imported before knowledge_distill_util")


def test_a_cpu_without_avx2_and_a_missing_cpuinfo_set_nothing(tmp_path):
    old = tmp_path / "cpuinfo"
    old.write_text(CPUS["AMD Opteron (SSE only)"][0])
    for path in (str(old), str(tmp_path / "missing")):
        environ = {}
        assert set_openblas_coretype(environ, path, modules={}) is None and environ == {}


def test_an_unknown_opt_out_value_ends_with_one_sentence(zen_cpuinfo, capsys):
    with pytest.raises(SystemExit) as stop:
        set_openblas_coretype({"KDU_OPENBLAS_CORETYPE": "Zen"}, zen_cpuinfo, modules={})
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: environment variable KDU_OPENBLAS_CORETYPE='Zen' must be one of auto, keep; set it to one of them "
        "or unset it for the default auto\n")


# A fresh process: import the package (first), then report the variable, the kernels OneFlow's OpenBLAS loaded,
# and values of the operators and of one training step of a tiny BERT student (float32).
_CHILD = r"""
import json
import knowledge_distill_util as kdu
import numpy as np
import oneflow as flow
import os
from knowledge_distill_util._cpu import oneflow_openblas_core
from knowledge_distill_util.models import BertForSequenceClassification

rng = np.random.default_rng(0)
s, t = (flow.tensor(rng.normal(size=(16, 40)).astype(np.float32), requires_grad=True) for _ in range(2))
hs, ht = (flow.tensor(rng.normal(size=(4, 8, 24)).astype(np.float32)) for _ in range(2))
proj = flow.tensor(rng.normal(size=(24, 24)).astype(np.float32))
soft = kdu.soft_cross_entropy(s @ t.T, t @ t.T, student_temperature=2.0, teacher_temperature=2.0)
soft.backward()
mse = kdu.mseloss(hs @ proj, ht)
flow.manual_seed(0)
student = BertForSequenceClassification(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0, label_num=3)
optimizer = flow.optim.SGD(student.parameters(), lr=0.5)
ids = flow.tensor(rng.integers(1, 50, (4, 12)))
mask, segments = flow.ones_like(ids), flow.zeros_like(ids)
target = flow.tensor(rng.normal(size=(4, 3)).astype(np.float32))
losses = []
for _ in range(2):
    loss = kdu.soft_cross_entropy(student(ids, mask, segments)[0], target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(float(loss))
print(json.dumps({"variable": os.environ.get("OPENBLAS_CORETYPE"), "core": oneflow_openblas_core(),
                  "soft_ce": float(soft), "soft_ce_grad": s.grad.numpy().ravel().tolist(), "mse": float(mse),
                  "losses": losses, "weights": student.classifier.weight.numpy().ravel().tolist()}))
"""


def _children(*envs):
    """Run :data:`_CHILD` once per environment, at once; each child's report and its output."""
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "KDU_OPENBLAS_CORETYPE")}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=dict(base, GLOG_minloglevel="3", OPENBLAS_VERBOSE="2", **env))
                for env in envs]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err[-3000:]
        reports.append((json.loads(out.strip().splitlines()[-1]), err + out))
    return reports


def test_the_kernels_are_chosen_before_oneflow_loads_and_keep_every_value():
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
        choice = choose_openblas_coretype(stream.read())
    if choice is None:
        pytest.skip("this CPU gets no OPENBLAS_CORETYPE (no AVX2 and FMA)")
    (auto, auto_log), (user, user_log), (keep, _) = _children(
        {}, {"OPENBLAS_CORETYPE": "Prescott"}, {"KDU_OPENBLAS_CORETYPE": "keep"})  # Prescott: SSE3, any CPU
    # OneFlow 0.9's OpenBLAS has no AVX-512 kernels and runs its Haswell ones for SkylakeX.
    loaded = "Haswell" if choice == "SkylakeX" else choice
    assert auto["variable"] == choice and auto["core"] == loaded and f"Core: {loaded}" in auto_log
    assert user["variable"] == "Prescott" and user["core"] == "Prescott" and "Core: Prescott" in user_log
    assert keep["variable"] is None and keep["core"]  # the library's own choice (Barcelona on an EPYC Zen 4)
    for other in (user, keep):
        for key in ("soft_ce", "soft_ce_grad", "mse", "losses", "weights"):
            np.testing.assert_allclose(other[key], auto[key], rtol=2e-6, atol=1e-7, err_msg=key)

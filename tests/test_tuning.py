"""fastconv.tune: every eligible algorithm is timed, the winner is cached per (shape, dtype,
threads, ISA), algo='auto' follows the cache, and an untrustworthy cache is ignored with a warning."""

import json
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import tuning
from fastconv.ops import conv2d, conv_algorithm
from reference import close, conv

CASE = {"input_shape": (1, 8, 12, 12), "weight_shape": (8, 8, 3, 3), "padding": 1}


def _arrays(rng, case=CASE):
    return (rng.standard_normal(case["input_shape"]).astype(np.float32),
            rng.standard_normal(case["weight_shape"]).astype(np.float32))


def _rewrite(edit):
    """Edits the cache file's JSON document in place and makes fastconv read it again."""
    path = tuning.cache_path()
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    tuning.reload_cache()


def test_tune_times_every_eligible_algorithm_and_caches_the_winner(cache_dir, rng):
    (r,) = fastconv.tune([CASE], budget_s=0.0)
    assert set(r["times_s"]) == {"direct", "im2col", "winograd"}  # pointwise/depthwise cannot run a dense 3x3
    fastest = min(r["times_s"], key=r["times_s"].get)
    close_call = r["times_s"]["direct"] <= (1 + tuning.TIE_MARGIN) * r["times_s"][fastest]
    assert r["best"] == ("direct" if close_call else fastest)
    assert r["heuristic"] == "direct" and r["speedup"] == pytest.approx(r["times_s"]["direct"] / r["times_s"][r["best"]])
    doc = json.loads((cache_dir / tuning.FILENAME).read_text())
    assert doc["format"] == tuning.FORMAT and doc["version"] == tuning.VERSION
    assert doc["entries"][r["key"]]["algo"] == r["best"]
    x, w = _arrays(rng)
    assert conv_algorithm(x, w, padding=1) == r["best"]
    # A later process reads the same file.
    tuning.reload_cache()
    assert conv_algorithm(x, w, padding=1) == r["best"]


def test_auto_runs_the_cached_algorithm_for_that_shape_threads_and_isa_only(cache_dir, rng):
    (r,) = fastconv.tune([CASE], budget_s=0.0)
    _rewrite(lambda doc: doc["entries"][r["key"]].update(algo="im2col"))  # not the heuristic's choice
    x, w = _arrays(rng)
    assert conv_algorithm(x, w, padding=1) == "im2col"
    assert close(conv2d(x, w, padding=1), conv(x, w, padding=1))
    # Other shapes, thread counts and ISAs keep the heuristic.
    assert conv_algorithm(x[:, :, :11], w, padding=1) == "direct"
    assert conv_algorithm(x, w, padding=2) == "direct"
    threads = fastconv.get_num_threads()
    fastconv.set_num_threads(threads + 1)
    try:
        assert conv_algorithm(x, w, padding=1) == "direct"
    finally:
        fastconv.set_num_threads(threads)
    with fastconv.use_isa("scalar"):
        assert conv_algorithm(x, w, padding=1) == "direct"
    assert conv_algorithm(x.astype(np.float64), w.astype(np.float64), padding=1) == "direct"


def test_a_cached_algorithm_that_cannot_run_the_shape_is_not_used(cache_dir, rng):
    (r,) = fastconv.tune([CASE], budget_s=0.0)
    _rewrite(lambda doc: doc["entries"][r["key"]].update(algo="pointwise"))
    x, w = _arrays(rng)
    assert conv_algorithm(x, w, padding=1) == "direct"
    assert close(conv2d(x, w, padding=1), conv(x, w, padding=1))


@pytest.mark.parametrize("content, message", [
    (b"\x00\xffnot json{", "cannot read it|not valid JSON"),
    (b"{\"format\": \"fastconv-tune-cache\", ", "not valid JSON"),
    (json.dumps({"hello": "world"}).encode(), "not a fastconv tuning cache"),
    (json.dumps([1, 2, 3]).encode(), "not a fastconv tuning cache"),
    (json.dumps({"format": tuning.FORMAT, "version": 99, "entries": {}}).encode(), "cache version 99"),
])
def test_a_corrupt_or_foreign_cache_is_ignored_with_a_warning(cache_dir, rng, content, message):
    cache_dir.mkdir(parents=True)
    (cache_dir / tuning.FILENAME).write_bytes(content)
    x, w = _arrays(rng)
    with pytest.warns(RuntimeWarning, match=message):
        assert conv_algorithm(x, w, padding=1) == "direct"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read once per process: no warning on every call
        assert close(conv2d(x, w, padding=1), conv(x, w, padding=1))


def test_a_cache_from_another_cpu_is_ignored(cache_dir, rng):
    (r,) = fastconv.tune([CASE], budget_s=0.0)
    _rewrite(lambda doc: doc.update(machine="Some Other CPU 9000") or doc["entries"][r["key"]].update(algo="im2col"))
    x, w = _arrays(rng)
    with pytest.warns(RuntimeWarning, match="another CPU"):
        assert conv_algorithm(x, w, padding=1) == "direct"


def test_malformed_entries_are_dropped_and_the_rest_used(cache_dir, rng):
    (r,) = fastconv.tune([CASE], budget_s=0.0)

    def edit(doc):
        doc["entries"][r["key"]]["algo"] = "im2col"
        doc["entries"]["bogus"] = {"algo": "fastest-possible"}
        doc["entries"]["worse"] = "direct"

    _rewrite(edit)
    x, w = _arrays(rng)
    with pytest.warns(RuntimeWarning, match="2 malformed entries"):
        assert conv_algorithm(x, w, padding=1) == "im2col"


def test_tune_replaces_an_untrustworthy_cache(cache_dir, rng):
    cache_dir.mkdir(parents=True)
    (cache_dir / tuning.FILENAME).write_text("garbage")
    with pytest.warns(RuntimeWarning, match="not valid JSON"):
        (r,) = fastconv.tune([CASE], budget_s=0.0)
    doc = json.loads((cache_dir / tuning.FILENAME).read_text())
    assert list(doc["entries"]) == [r["key"]]
    tuning.clear_cache()
    assert not (cache_dir / tuning.FILENAME).exists()
    x, w = _arrays(rng)
    assert conv_algorithm(x, w, padding=1) == "direct"


def test_tune_covers_depthwise_pointwise_1d_and_3d_shapes(cache_dir):
    cases = [
        {"input_shape": (1, 6, 9, 9), "weight_shape": (6, 1, 3, 3), "padding": 1, "groups": 6},
        {"input_shape": (1, 6, 9, 9), "weight_shape": (4, 6, 1, 1)},
        {"input_shape": (2, 3, 20), "weight_shape": (4, 3, 5), "stride": 2},
        {"input_shape": (1, 2, 5, 5, 5), "weight_shape": (3, 2, 3, 3, 3), "padding": "same"},
    ]
    got = [set(r["times_s"]) for r in fastconv.tune(cases, budget_s=0.0, save=False)]
    assert got == [{"direct", "im2col", "depthwise"}, {"direct", "im2col", "pointwise"}, {"direct", "im2col"},
                   {"im2col"}]
    assert not tuning.cache_path().exists()  # save=False


def test_tune_accepts_benchmark_cases(cache_dir):
    from fastconv.bench.cases import ConvCase

    (r,) = fastconv.tune([ConvCase("tiny", n=1, c_in=4, c_out=4, size=8, kernel=3, padding=1)], budget_s=0.0)
    assert r["input_shape"] == [1, 4, 8, 8] and r["weight_shape"] == [4, 4, 3, 3]


@pytest.mark.parametrize("cases, kwargs, error", [
    ([{"input_shape": (1, 8, 12, 12)}], {}, ValueError),
    ([{"input_shape": (1, 8, 12, 12), "weight_shape": (8, 8, 3, 3), "bias": True}], {}, ValueError),
    ([{"input_shape": (8, 12), "weight_shape": (8, 8, 3)}], {}, ValueError),
    ([{"input_shape": (1, 8, 12, 12), "weight_shape": (8, 4, 3, 3)}], {}, ValueError),
    ([42], {}, TypeError),
    ([CASE, {"input_shape": (1, 8, 12, 12), "weight_shape": (8, 3, 3, 3)}], {}, ValueError),  # nothing timed
    ([CASE], {"dtype": "int8"}, ValueError),
    ([CASE], {"budget_s": -1}, ValueError),
])
def test_tune_rejects_bad_arguments(cache_dir, cases, kwargs, error):
    with pytest.raises(error):
        fastconv.tune(cases, **kwargs)
    assert not tuning.cache_path().exists()


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCONV_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_path() == tmp_path / "xdg" / "fastconv" / tuning.FILENAME
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tuning.cache_path() == tmp_path / "home" / ".cache" / "fastconv" / tuning.FILENAME
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "mine"))
    assert tuning.cache_path() == tmp_path / "mine" / tuning.FILENAME


def test_conv_algorithm_reports_the_heuristic(rng):
    x = rng.standard_normal((1, 6, 9, 9)).astype(np.float32)
    assert conv_algorithm(x, np.ones((6, 1, 3, 3), np.float32), padding=1, groups=6) == "depthwise"
    assert conv_algorithm(x, np.ones((4, 6, 1, 1), np.float32)) == "pointwise"
    assert conv_algorithm(x, np.ones((4, 6, 1, 1), np.float32), stride=2) == "im2col"  # a strided shortcut
    assert conv_algorithm(x, np.ones((4, 6, 1, 1), np.float32), padding=1) == "direct"
    assert conv_algorithm(x, np.ones((4, 6, 3, 3), np.float32)) == "direct"
    assert conv_algorithm(x[:, :, None], np.ones((4, 6, 1, 3, 3), np.float32)) == "im2col"
    with pytest.raises(ValueError, match="spatial"):
        conv_algorithm(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))

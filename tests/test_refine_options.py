"""RefineOptions: refine's options, defaults and checks in one frozen object.

The defaults that refine, the command line and refine_many show are read back
from each face here and compared with RefineOptions' own, so a face that stops
reading the object (a default written out again) fails a test. The widgets'
defaults are checked in tests/gui/test_option_defaults.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pytest

import napari_samrefine as nsr
from napari_samrefine.cli import build_parser
from napari_samrefine.cli.refine import refine_options
from napari_samrefine.pipeline.options import DEFAULTS, OPTION_NAMES, RefineOptions

BAD = [
    ("mode", "instances", "mode must be 'instance' or 'semantic', got 'instances'"),
    ("iterations", 0, "iterations must be a whole number >= 1, or None for the model's default, got 0"),
    ("iterations", 2.0,
     "iterations must be a whole number >= 1, or None for the model's default, got 2.0"),
    ("keep", "coarse", "keep must be 'refined' (every refined mask), 'better'"),
    ("scale", 0, "scale must be 'auto', None or a number > 0 such as 2, got 0"),
    ("scale", "big", "scale must be 'auto', None or a number > 0 such as 2, got 'big'"),
    ("use_box", "yes", "use_box must be True, False or None (the model's profile), got 'yes'"),
    ("use_points", 1, "use_points must be True, False or None (the model's profile), got 1"),
    ("cebox", 1.5, "cebox must be 'auto', None or a fraction in [0, 1] (0.1 by default), got 1.5"),
    ("cebox", "off", "cebox must be 'auto', None or a fraction in [0, 1] (0.1 by default), got 'off'"),
    ("strength", 0, "strength must be a positive number (15 by default), got 0"),
    ("gamma", float("inf"), "gamma must be a positive number (4 by default), got inf"),
    ("label_ids", 3, "label_ids must be None (all) or a list of whole numbers >= 0 such as [3, 7], got 3"),
    ("label_ids", [1, -2], "label_ids must be None (all) or a list of whole numbers >= 0"),
    ("label_ids", [1.5], "label_ids must be None (all) or a list of whole numbers >= 0"),
    ("planes", "0,1", "planes must be None (all), a plane index, a (t, z) pair or a list of them"),
    ("planes", [0, "a"], "planes must be None (all), a plane index, a (t, z) pair or a list of them"),
    ("channel", "max", "channel must be None, 'mean' or a channel index, got 'max'"),
    ("channel_axis", 1.0, "channel_axis must be None or an axis index, got 1.0"),
    ("percentiles", (99.8, 1.0),
     "percentiles must be two numbers 0 <= low < high <= 100 (1 99.8 by default), got (99.8, 1.0)"),
    ("percentiles", 5, "percentiles must be two numbers 0 <= low < high <= 100"),
    ("convergence", 1.01, "convergence must be in [0, 1] or None (0.99 by default), got 1.01"),
    ("batch_size", 0,
     "batch_size must be a whole number >= 1 (objects per decoder call, 32 by default), got 0"),
    ("tile", 16, "tile must be None, 'auto' or a whole number of pixels >= 32, got 16"),
    ("tile", "big", "tile must be None, 'auto' or a whole number of pixels >= 32, got 'big'"),
    ("halo", 64, "halo must be None or a whole number of pixels >= 0 and less than half the tile"),
    ("binary", "split", "binary must be 'components' or 'one', got 'split'"),
]


@pytest.mark.parametrize(("name", "value", "text"), BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_each_bad_value_is_refused_with_its_message(name, value, text):
    changes = {name: value, **({"tile": 128} if name == "halo" else {})}
    with pytest.raises(ValueError) as err:
        RefineOptions(**changes)
    assert str(err.value).startswith(text)
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


def test_every_bad_option_is_named_at_once():
    with pytest.raises(ValueError) as err:
        RefineOptions(iterations=0, gamma=-1.0, binary="x")
    message = str(err.value)
    assert [m.split(" must")[0] for m in message.split("; ")] == ["iterations", "gamma", "binary"]


def test_an_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="iteration"):
        RefineOptions(iteration=3)


def test_the_object_is_frozen_and_hashable():
    options = RefineOptions(label_ids=[4, 2], planes=[(0, 1), 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.iterations = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.label_ids = (1,)
    assert hash(options) == hash(RefineOptions(label_ids=(2, 4), planes=[2, (0, 1)]))
    changed = dataclasses.replace(options, iterations=2)
    assert changed.iterations == 2 and options.iterations == DEFAULTS.iterations
    with pytest.raises(ValueError, match="iterations"):
        dataclasses.replace(options, iterations=-1)  # a copy is checked too


def test_collections_are_kept_immutably_and_the_users_are_not_changed():
    ids, planes = [7, 3, 7], [2, 0]
    options = RefineOptions(label_ids=ids, planes=planes, percentiles=[2, 98])
    assert options.label_ids == (3, 7) and ids == [7, 3, 7]
    assert options.planes == frozenset({0, 2}) and planes == [2, 0]
    assert options.percentiles == (2.0, 98.0)
    assert RefineOptions(use_mask=np.bool_(False)).use_mask is False
    # a (t, z) pair stays a pair; a list of two time points stays two time points
    assert RefineOptions(planes=(1, 2)).planes == (1, 2)
    assert RefineOptions(planes=[1, 2]).planes == frozenset({1, 2})
    assert RefineOptions(planes=np.int64(3)).planes == 3


def test_planes_keep_their_meaning_on_a_4d_stack():
    from napari_samrefine.pipeline.plane import plane_indices

    shape = (3, 4, 8, 8)
    for planes in ([1, 2], (1, 2), [(0, 1), 2], 1, None):
        kept = RefineOptions(planes=planes).planes
        assert plane_indices(shape, kept) == plane_indices(shape, planes), planes


def test_the_cebox_auto_rule():
    assert DEFAULTS.cebox == "auto"
    assert RefineOptions(mode="instance").cebox_lambda == 0.1
    assert RefineOptions(mode="semantic").cebox_lambda is None
    assert RefineOptions(cebox=0).cebox_lambda is None
    assert RefineOptions(cebox=None).cebox_lambda is None
    assert RefineOptions(mode="semantic", cebox=0.3).cebox_lambda == 0.3


def test_prompt_settings_follow_the_options(sam):
    settings = RefineOptions(mode="semantic", strength=9.0, gamma=2.0, use_box=False).prompt_settings(sam)
    assert settings.cebox is None and settings.strength == 9.0 and settings.gamma == 2.0
    assert not settings.switches.box and settings.switches.points  # the rest from the profile
    assert DEFAULTS.prompt_settings(sam).cebox == DEFAULTS.cebox_lambda


# -- the faces read the object -------------------------------------------------------------------


def test_refine_shows_the_options_defaults_and_documents_each():
    parameters = inspect.signature(nsr.refine).parameters
    for name in OPTION_NAMES:
        assert parameters[name].default == DEFAULTS.default(name), name
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    doc = nsr.refine.__doc__
    for name in OPTION_NAMES:
        assert re.search(rf"^    (\w+, )*{name}(, \w+)* : ", doc, re.MULTILINE), name
    assert nsr.RefineOptions is RefineOptions


def test_refine_checks_through_the_options_before_any_work():
    image = np.zeros((32, 32), np.uint8)
    labels = np.zeros((32, 32), np.uint8)
    labels[8:20, 8:20] = 1
    # the model does not exist: the options are refused before it is looked up
    with pytest.raises(ValueError) as err:
        nsr.refine(image, labels, "no_such_model", percentiles=(50, 10), planes="x")
    with pytest.raises(ValueError) as direct:
        RefineOptions(percentiles=(50, 10), planes="x")
    assert str(err.value) == str(direct.value)


def test_refine_gives_the_same_labels_with_prepared_options(sam):
    image = np.zeros((48, 48), np.uint8)
    image[10:30, 12:34] = 200
    labels = np.zeros((48, 48), np.uint16)
    labels[12:28, 10:30] = 5
    options = RefineOptions(iterations=2, cebox=None, label_ids=[5])
    kw = dict(embedding_cache=nsr.EmbeddingCache())
    by_object = nsr.refine(image, labels, sam, **options.as_kwargs(), **kw)
    by_keywords = nsr.refine(image, labels, sam, iterations=2, cebox=None, label_ids=[5], **kw)
    np.testing.assert_array_equal(by_object.labels, by_keywords.labels)
    assert by_object.table().equals(by_keywords.table())


def _refine_args(*flags):
    return build_parser().parse_args(["refine", "image.tif", "labels.tif", "-o", "out.tif", *flags])


def test_the_command_line_without_flags_gives_the_default_options():
    assert refine_options(_refine_args()) == DEFAULTS


def test_the_command_line_flags_give_the_options():
    args = _refine_args("--mode", "semantic", "--iterations", "2", "--no-box", "--cebox", "0.2",
                        "--strength", "9", "--gamma", "3", "--convergence", "1", "--batch-size", "4",
                        "--tile", "none", "--planes", "0,2", "--percentiles", "2", "98",
                        "--binary", "one", "--channel", "mean", "--channel-axis", "0",
                        "--keep", "better")
    assert refine_options(args) == RefineOptions(
        mode="semantic", iterations=2, use_box=False, cebox=0.2, strength=9.0, gamma=3.0,
        convergence=None, batch_size=4, tile=None, planes=[0, 2], percentiles=(2.0, 98.0),
        binary="one", channel="mean", channel_axis=0, keep="better",
    )


def test_refine_help_shows_the_options_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["refine"]
    text = re.sub(r"\s+", " ", sub.format_help())
    assert re.search(r"--iterations .*?default: the model's measured choice", text)
    assert re.search(r"--keep .*?default: the model's measured choice", text)
    for flag, name in (("--strength", "strength"),
                       ("--gamma", "gamma"), ("--convergence", "convergence"),
                       ("--batch-size", "batch_size"), ("--mode", "mode"), ("--binary", "binary"),
                       ("--tile", "tile")):
        value = DEFAULTS.default(name)
        assert re.search(rf"{flag} .*?\(default: {re.escape(str(value))}\)", text), flag
    low, high = DEFAULTS.percentiles
    assert f"(default: {low} {high})" in text
    assert f"default {DEFAULTS.cebox_lambda:g} in instance mode" in text


def test_benchmark_iterations_default_is_refines():
    args = build_parser().parse_args(["benchmark", "--data", "data"])
    assert args.iterations == DEFAULTS.iterations


def test_refine_many_checks_its_options_before_any_work(tmp_path):
    pairs = [(tmp_path / "a.tif", tmp_path / "b.tif")]  # never read: the options fail first
    with pytest.raises(ValueError, match=r"^iterations must be a whole number >= 1"):
        nsr.refine_many(pairs, tmp_path / "out", "no_such_model", iterations=0)
    with pytest.raises(TypeError, match="unexpected option.*'iteration'"):
        nsr.refine_many(pairs, tmp_path / "out", "no_such_model", iteration=2)
    assert not (tmp_path / "out").exists()

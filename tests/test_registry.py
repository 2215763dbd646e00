"""The registry of pruning methods: every swept method is registered with its params section, names
are unique, and each method's build(ctx) on a tiny MLP and synthetic data reaches the rate, with
its budget and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import torch
import yaml
from conftest import committed_params, fresh, random_split, sweep_point
from torch.nn.utils import prune as torch_prune

import nncompress.prune as prune_package
from nncompress import config
from nncompress.errors import ParamError
from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.prune.registry import METHODS, Context, MethodConfig, register, section_name
from nncompress.prune.retrain import Retrainer
from nncompress.prune.schedule import one_shot
from nncompress.schema import Positive, Seeds, fraction, parse

ROOT = Path(__file__).resolve().parents[1]
REGISTERED = ["finetune", "global", "gradual", "lottery", "magnitude", "random", "structured"]
HIDDEN = 8
SIZES = {"fc1": 784 * HIDDEN, "fc2": HIDDEN * 10}
N_WEIGHTS = sum(SIZES.values())
N_TRAIN, BATCH = 64, 16  # 4 iterations per epoch

# Tiny budgets, all different so that budget() tells them apart.
TINY = {
    "model": {"hidden": [HIDDEN]},
    "train": {"epochs": 2, "batch_size": BATCH, "lr": 0.1, "log_every": 4, "device": "cpu"},
    "finetune": {"epochs": 2, "batch_size": BATCH, "lr": 0.1, "device": "cpu"},
    "prune_random": {"seeds": [4, 2]},
    "prune_magnitude": {"finetune_epochs": 1},
    "prune_finetune": {"seeds": [3, 1]},
    "prune_gradual": {"steps": 2, "seeds": [5]},
    "prune_lottery": {"rounds": 3, "epochs": 1, "rewind_iteration": 3, "seeds": [0, 9]},
}
BUDGETS = {"random": 0, "magnitude": 1, "finetune": 2, "global": 2, "gradual": 2, "structured": 2, "lottery": 3}
SEEDS = {
    "random": [4, 2],
    "magnitude": [0],  # no seeds key: one run per rate
    "finetune": [3, 1],
    "global": [0],
    "gradual": [5],
    "structured": [0],
    "lottery": [0, 9],
}


def yaml_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def tiny_params(**overrides: dict):
    """The committed params.yaml with tiny budgets (TINY), then `overrides`, validated."""
    return committed_params(TINY, overrides)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)

    return {"train": random_split(g, N_TRAIN), "val": random_split(g, 16)}


@pytest.fixture(scope="module")
def trained_state():
    torch.manual_seed(11)
    return {k: v.clone() for k, v in MLP(hidden_size=HIDDEN).state_dict().items()}


def context(data, params=None) -> Context:
    return Context(params or tiny_params(), data["train"], data["val"])


# --- what is registered -------------------------------------------------------------------------


def test_the_registered_methods():
    assert sorted(METHODS) == REGISTERED
    for name, cls in METHODS.items():
        assert issubclass(cls, MethodConfig)
        assert cls.name == name
    # the package re-exports the registry itself, not copies
    assert prune_package.METHODS is METHODS
    assert prune_package.Context is Context
    assert prune_package.MethodConfig is MethodConfig
    assert prune_package.register is register


def test_every_swept_method_is_registered_and_has_its_section():
    raw = yaml_params()
    params = config.load(ROOT / "params.yaml")
    assert params.sweep.methods == raw["sweep"]["methods"]
    for name in [*params.sweep.methods, params.compress.method]:
        assert name in METHODS
        assert section_name(name) == f"prune_{name}"
        assert section_name(name) in raw, name
        section = params.method(name)
        assert type(section) is METHODS[name]
        assert section == METHODS[name].model_validate(raw[section_name(name)])
        assert config.SECTIONS[section_name(name)] is METHODS[name]
        assert config.parse_section(section_name(name), raw[section_name(name)]) == section


def test_a_swept_method_without_its_section_is_refused():
    data = yaml_params()
    del data["prune_lottery"]
    used = r"^params.yaml: missing section prune_lottery \(the lottery method is used\)$"
    with pytest.raises(ParamError, match=used):
        parse(config.Params, data)
    data["sweep"]["methods"].remove("lottery")
    assert parse(config.Params, data).prune_lottery is None  # an unused method may go without one
    with pytest.raises(ParamError, match=r"^params.yaml: missing section prune_lottery$"):
        parse(config.Params, data).method("lottery")


def test_registering_a_name_twice_raises():
    before = dict(METHODS)

    class Again(MethodConfig):
        pass

    for name in REGISTERED:
        with pytest.raises(ValueError, match=rf"^pruning method '{name}' is registered twice$"):
            register(name)(Again)
    assert before == METHODS  # the first registration stands
    assert not hasattr(Again, "name")


# --- a method registered later ------------------------------------------------------------------


@pytest.fixture
def extra_method():
    """A tiny method registered for one test, removed from the registry afterwards."""
    assert "keep_top" not in METHODS

    @register("keep_top")
    class KeepTop(MethodConfig):
        rate_scale: Annotated[float, fraction("a scale")]
        seeds: Seeds
        epochs: Positive

        def build(self, ctx):
            return one_shot(unstructured("magnitude", "layer"), ctx.retrainer(self.epochs))

        def budget(self, ctx):
            return self.epochs

    try:
        yield KeepTop
    finally:
        METHODS.pop("keep_top", None)
    assert "keep_top" not in METHODS


def test_a_method_registered_in_a_test_is_registered_and_removed(extra_method, data, trained_state):
    assert METHODS["keep_top"] is extra_method
    assert extra_method.name == "keep_top"
    with pytest.raises(ValueError, match="registered twice"):
        register("keep_top")(extra_method)
    # its section has the schema's strictness and one-line errors
    section = parse(extra_method, {"rate_scale": 0.5, "seeds": [2, 1], "epochs": 1}, prefix=("prune_keep_top",))
    assert section.sweep_seeds() == [2, 1]
    bad = [
        ({"rate_scale": 0.5, "seeds": [2], "epochs": 0}, "prune_keep_top.epochs must be > 0, got 0"),
        ({"rate_scale": 0.5, "seeds": [], "epochs": 1}, "prune_keep_top.seeds must be a non-empty list"),
        ({"rate_scale": 0.5, "seeds": [2], "epochs": 1.0}, "prune_keep_top.epochs must be an integer"),
        ({"rate_scale": 0.5, "seeds": [2]}, "missing key prune_keep_top.epochs"),
        ({"rate_scale": 0.5, "seeds": [2], "epochs": 1, "rounds": 2}, "unknown key prune_keep_top.rounds"),
    ]
    for values, message in bad:
        with pytest.raises(ParamError, match="^params.yaml: " + message.replace(".", r"\.")):
            parse(extra_method, values, prefix=("prune_keep_top",))
    # and it builds like the others
    ctx = context(data)
    assert section.budget(ctx) == 1
    torch.manual_seed(0)
    model = section.build(ctx)(fresh(trained_state), 0.5)
    make_permanent(model)
    assert {n: int((m.weight == 0).sum()) for n, m in prunable(model)} == {n: s // 2 for n, s in SIZES.items()}


@pytest.mark.xfail(
    strict=True,
    raises=(ParamError, AssertionError),
    reason="config.Params, config.SECTIONS and the sweep.methods choices are built when nncompress.config "
    "is first imported: a method registered after that has no section in the schema",
)
def test_config_validates_the_section_of_a_method_registered_later(extra_method):
    assert section_name("keep_top") in config.SECTIONS
    section = config.parse_section("prune_keep_top", {"rate_scale": 0.5, "seeds": [1], "epochs": 1})
    assert type(section) is extra_method
    data = yaml_params()
    data["sweep"]["methods"].append("keep_top")
    data["prune_keep_top"] = {"rate_scale": 0.5, "seeds": [1], "epochs": 1}
    assert type(parse(config.Params, data).method("keep_top")) is extra_method


# --- Context and the MethodConfig defaults ------------------------------------------------------


def test_context_retrainer_uses_the_shared_finetune_block(data):
    params = tiny_params(finetune={"epochs": 3, "lr": 0.25, "batch_size": 32})
    ctx = Context(params, data["train"], data["val"])
    assert ctx.device == torch.device("cpu")
    default, own = ctx.retrainer(), ctx.retrainer(5)
    for retrain, epochs in ((default, 3), (own, 5)):
        assert isinstance(retrain, Retrainer)
        assert retrain.opt is params.finetune
        assert retrain.epochs == epochs
        assert retrain.iterations == epochs * 2  # 64 images in batches of 32
        assert retrain.train is data["train"]
        assert retrain.val is data["val"]
    assert ctx.retrainer(0).epochs == 0  # 0 is a budget, not "use the default"


def test_a_context_budget_replaces_finetune_epochs_for_the_shared_budget_only(data):
    """compress.finetune_epochs: the methods on the shared budget retrain that long; a method with a
    budget of its own (magnitude's finetune_epochs, lottery's rounds x epochs) keeps it."""
    params = tiny_params()
    ctx = Context(params, data["train"], data["val"], budget=7)
    assert ctx.retrainer().epochs == 7 and ctx.retrainer(5).epochs == 5
    assert Context(params, data["train"], data["val"], budget=0).retrainer().epochs == 0
    for name in REGISTERED:  # finetune.epochs is 2 here: the methods with 2 retrain on the shared budget
        assert params.method(name).budget(ctx) == (7 if BUDGETS[name] == 2 else BUDGETS[name]), name


def test_method_config_defaults(data):
    class Bare(MethodConfig):
        pass

    ctx = context(data)
    with pytest.raises(NotImplementedError):
        Bare().build(ctx)
    assert Bare().budget(ctx) == ctx.params.finetune.epochs == 2
    assert Bare().sweep_seeds() == [0]


@pytest.mark.parametrize("name", REGISTERED)
def test_budget_and_sweep_seeds(data, name):
    section = tiny_params().method(name)
    assert section.budget(context(data)) == BUDGETS[name]
    assert section.sweep_seeds() == SEEDS[name]
    assert type(section.sweep_seeds()) is list


# --- each method builds and reaches the rate ----------------------------------------------------


def scope_of(params, name):
    """Which magnitude scope a method prunes with: per layer, or one threshold over both layers."""
    if name == "global":
        return "global"
    return getattr(params.method(name), "scope", "layer")


def expected_zeros(scope, rate):
    if scope == "global":
        return {"total": round(rate * N_WEIGHTS)}
    return {name: round(rate * n) for name, n in SIZES.items()}


def zero_counts(scope, model):
    counts = {name: int((m.weight == 0).sum()) for name, m in prunable(model)}
    return {"total": sum(counts.values())} if scope == "global" else counts


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", [n for n in REGISTERED if n != "structured"])
def test_unstructured_methods_reach_the_rate(data, trained_state, name):
    params = tiny_params()
    method = params.method(name).build(context(data, params))
    for rate in (0.5, 0.9):
        model = sweep_point(method, trained_state, rate)
        assert type(model) is MLP
        assert not any(torch_prune.is_pruned(m) for m in model.modules())
        assert sum(p.numel() for p in model.parameters()) == N_WEIGHTS + HIDDEN + 10  # nothing removed
        scope = scope_of(params, name)
        assert zero_counts(scope, model) == expected_zeros(scope, rate), (name, rate)
        survivors = {n: m.weight.detach()[m.weight != 0] for n, m in prunable(model)}
        trained = {n: trained_state[f"{n}.weight"] for n in SIZES}
        if BUDGETS[name] == 0:  # no retraining: the survivors are trained weights, untouched
            for n in SIZES:
                assert torch.all(torch.isin(survivors[n], trained[n])), n
        else:  # retrained (and for lottery, rewound): the survivors moved
            assert not torch.all(torch.isin(survivors["fc1"], trained["fc1"])), name
        again = sweep_point(method, trained_state, rate)
        assert same_state(model, again)  # seeded per (seed, rate): reproducible


def test_structured_method_removes_neurons(data, trained_state):
    params = tiny_params()
    method = params.method("structured").build(context(data, params))
    for rate in (0.5, 0.9):
        model = sweep_point(method, trained_state, rate)
        kept = HIDDEN - round(rate * HIDDEN)  # 4, then 1
        assert type(model) is MLP
        assert model.fc1.out_features == model.fc2.in_features == kept
        assert sum(p.numel() for p in model.parameters()) == (784 + 1) * kept + (kept + 1) * 10
        assert all(int((m.weight == 0).sum()) == 0 for _, m in prunable(model))  # a dense, smaller MLP
        assert not any(torch_prune.is_pruned(m) for m in model.modules())
    with pytest.raises(ParamError, match="structured pruning needs hidden units"):
        method(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), 0.5)


@pytest.mark.parametrize("name", ["gradual", "lottery"])
def test_the_scope_key_picks_layer_or_global_magnitude(data, trained_state, name):
    """What methods.magnitude_by_scope did: the method's scope key decides per-layer or global."""
    counts = {}
    for scope in ("layer", "global"):
        params = tiny_params(**{section_name(name): {"scope": scope}})
        model = sweep_point(params.method(name).build(context(data, params)), trained_state, 0.9)
        assert zero_counts(scope, model) == expected_zeros(scope, 0.9)
        counts[scope] = zero_counts("layer", model)
    # global pruning takes another share from each layer (fc2's initial weights are larger)
    assert counts["global"] != counts["layer"]
    assert counts["global"]["fc1"] + counts["global"]["fc2"] == round(0.9 * N_WEIGHTS)

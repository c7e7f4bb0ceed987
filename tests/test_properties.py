"""Property-based tests: mutated specs never crash the tool, and valid specs build exactly as planned."""

from __future__ import annotations

import math

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import SHIPPED
from mnist_keras.cli import main
from mnist_keras.errors import UserError
from mnist_keras.spec.layer_registry import ENTRIES
from mnist_keras.spec.loader import load_spec

SHIPPED_TEXT = {p.name: p.read_text() for p in sorted(SHIPPED.glob("*.yaml"))}
WORDS = [*ENTRIES, "data", "model", "train", "runtime", "layers", "template", "lenet5", "relu", "units",
         "filters", "type", "adam", "sgd", "epochs", "max_params", "nan", "-.inf", "~", "<<", "*a", "&a"]
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.sampled_from(WORDS),
              st.text(max_size=12)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(WORDS), inner, max_size=3),
    max_leaves=6,
)
settings.register_profile("fast", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("fast")


def paths(node, here=()):
    """Every path into nested dicts and lists."""
    yield here
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from paths(child, here + (key,))


@st.composite
def mutated_data(draw):
    """A shipped spec with one value replaced, one key dropped or renamed, or an unknown key added."""
    data = yaml.safe_load(SHIPPED_TEXT[draw(st.sampled_from(sorted(SHIPPED_TEXT)))])
    where = draw(st.sampled_from([p for p in paths(data) if p]))
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    last, how = where[-1], draw(st.sampled_from(["replace", "drop", "rename", "add"]))
    if how == "replace" or (how == "rename" and not isinstance(parent, dict)):
        parent[last] = draw(values)
    elif how == "drop":
        del parent[last]
    elif how == "rename":
        parent[draw(st.sampled_from(WORDS))] = parent.pop(last)
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(WORDS))] = draw(values)
    else:
        parent.insert(last, draw(values))
    return yaml.safe_dump(data, sort_keys=False)


@st.composite
def mutated_text(draw):
    """A shipped spec's text with a few characters inserted, deleted or replaced (YAML's own syntax included)."""
    text = SHIPPED_TEXT[draw(st.sampled_from(sorted(SHIPPED_TEXT)))]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        noise = draw(st.text(alphabet=":-[]{}&*!|>'\"#%@`,?\n\t 0123456789.eE+_abcz\\", max_size=6))
        text = text[:at] + noise + text[at + cut:]
    return text


@st.composite
def override_texts(draw):
    """A `--set` text: a path into a shipped spec (or a made-up one) = a random or YAML-ish value."""
    data = yaml.safe_load(SHIPPED_TEXT[draw(st.sampled_from(sorted(SHIPPED_TEXT)))])
    path = draw(st.sampled_from([p for p in paths(data) if p]) | st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    value = draw(st.sampled_from(["1e-3", "+1e4", ".5", "1.", "-.inf", ".nan", "ReLU", "{1: x}", "[a]", "~", "*a",
                                  "!!python/name:os.system", "&a 1", "'", "{", "9" * 60])
                 | st.text(max_size=12) | st.builds(str, values))
    return draw(st.sampled_from([f"{key}={value}", draw(st.text(max_size=20)), f"{key}{value}"]))


def refuses_or_works(path, command="summary", overrides=()) -> None:
    """`command` either works (exit 0) or reports a UserError (exit 2): never a traceback."""
    result = CliRunner().invoke(main, [command, str(path), *(a for text in overrides for a in ("--set", text))])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        assert result.stderr.startswith("error: "), result.stderr
        assert overrides or result.stderr.startswith(f"error: {path}"), result.stderr


@given(text=mutated_data() | mutated_text(), command=st.sampled_from(["summary", "validate"]))
def test_mutated_shipped_specs_never_crash(text, command, tmp_path):
    path = tmp_path / "mutant.yaml"
    path.write_text(text)
    refuses_or_works(path, command)


@given(overrides=st.lists(override_texts(), min_size=1, max_size=3), name=st.sampled_from(sorted(SHIPPED_TEXT)),
       mutant=st.none() | mutated_data())
def test_random_overrides_never_crash(overrides, name, mutant, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(mutant or SHIPPED_TEXT[name])
    refuses_or_works(path, "validate", overrides)


@given(junk=st.binary(max_size=64), at=st.integers(0, 400))
def test_random_bytes_never_crash(junk, at, tmp_path):
    text = SHIPPED_TEXT["lenet5.yaml"].encode()
    path = tmp_path / "bytes.yaml"
    path.write_bytes(text[:at] + junk + text[at:])
    refuses_or_works(path)


# ------------------------------------------------------------------------------- valid specs

activations = st.sampled_from(["relu", "tanh", "gelu", "linear", None])
image_layers = st.one_of(
    st.builds(lambda f, k, s, p, b, a: {"conv2d": {"filters": f, "kernel_size": k, "strides": s, "padding": p,
                                                   "use_bias": b, "activation": a}},
              st.integers(1, 6), st.integers(1, 4), st.integers(1, 2), st.sampled_from(["valid", "same"]),
              st.booleans(), activations),
    st.builds(lambda kind, size: {kind: size}, st.sampled_from(["max_pool2d", "avg_pool2d"]), st.integers(1, 3)),
    st.builds(lambda c, s: {"batch_norm": {"center": c, "scale": s}}, st.booleans(), st.booleans()),
    st.builds(lambda filters, bn, pool: {"conv_pool_stack": {"filters": filters, "batch_norm": bn, "pool": pool}},
              st.lists(st.integers(1, 6), min_size=1, max_size=2), st.booleans(), st.sampled_from(["max", "avg", None])),
    st.just({"dropout": 0.25}), st.just({"activation": "relu"}),
)
flat_layers = st.one_of(
    st.builds(lambda u, b, a: {"dense": {"units": u, "use_bias": b, "activation": a}},
              st.integers(1, 40), st.booleans(), activations),
    st.builds(lambda units, bn, drop: {"dense_stack": {"units": units, "batch_norm": bn, "dropout": drop}},
              st.lists(st.integers(1, 40), min_size=1, max_size=3), st.booleans(), st.sampled_from([None, 0.5])),
    st.builds(lambda c: {"batch_norm": {"center": c}}, st.booleans()),
)
layer_lists = st.builds(lambda head, tail: [*head, "flatten", *tail, {"dense": 10}],
                        st.lists(image_layers, max_size=4), st.lists(flat_layers, max_size=3))
templates = st.builds(lambda a, p, pad: {"lenet5": {"activation": a, "pool": p, "padding": pad}},
                      st.sampled_from(["relu", "tanh"]), st.sampled_from(["max", "avg"]), st.sampled_from(["valid", "same"]))


@settings(max_examples=25)
@given(model=st.one_of(st.builds(lambda ls: {"layers": ls}, layer_lists), st.builds(lambda t: {"template": t}, templates)),
       resize=st.sampled_from([None, [32, 32], [20, 24]]))
def test_valid_specs_build_with_the_planned_parameter_count(model, resize, tmp_path):
    from mnist_keras.model.build import build_model

    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump({"model": model, "data": {"preprocess": {"resize": resize}}}))
    try:
        spec = load_spec(path)
    except UserError as err:  # a random stack can shrink the image to nothing; that is reported, not built
        assume("larger than its" not in str(err))
        raise
    planned = spec.plan()
    built = build_model(spec)
    assert built.count_params() == sum(p.trainable + p.non_trainable for p in planned)
    trainable = sum(math.prod(w.shape) for w in built.trainable_weights)
    assert trainable == sum(p.trainable for p in planned)
    assert built.output_shape == (None, 10)
    summary = CliRunner().invoke(main, ["summary", str(path)])
    assert f"Total params: {built.count_params():,}" in summary.output

"""Property-based tests: random options and inputs never crash mflows with anything unexpected.

Whatever hypothesis throws at ``make_model``, at every model method and at ``fit`` (random
shapes, dtypes, NaN/inf, extreme magnitudes, random option values), the outcome must be either
an :class:`mflows.errors.InvalidArgumentError`-style refusal (a ``ValueError`` or an
``MflowsError``) or a finite result. The one documented exception: a log density may be ``-inf``
where the density underflows (e.g. at |x| = 1e30 in float32, -|z|^2 / 2 is below the float
range). The profile is derandomised, so CI runs the same examples every time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mflows
from mflows.errors import MflowsError
from mflows.models import ARCHITECTURE_KEYS, KINDS, Model, make_model

PROFILE = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: the smallest architecture of every kind (fast to build and evaluate).
TINY = {
    "outer_layers": 1,
    "inner_layers": 1,
    "hidden_features": 4,
    "num_blocks": 1,
    "num_bins": 2,
    "encoder_hidden_features": 4,
    "encoder_num_blocks": 1,
    "decoder_hidden_features": 4,
    "decoder_num_blocks": 1,
    "levels": 1,
    "steps_per_level": 1,
    "image_options": {"hidden_channels": 2},
}

REFUSALS = (ValueError, MflowsError)

#: any value of any type an option could be given.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["spline", "affine", "lu", "permutation", "none", "sphere", "x", ""]),
    st.lists(st.integers(-1, 4), max_size=3),
)


def tiny(kind: str) -> dict[str, Any]:
    return {k: v for k, v in TINY.items() if k in ARCHITECTURE_KEYS[kind]}


def assert_finite(value: torch.Tensor, log_density: bool = False) -> None:
    assert isinstance(value, torch.Tensor)
    ok = torch.isfinite(value)
    if log_density:
        ok = ok | (value == -math.inf)
    assert bool(ok.all()), value


@settings(PROFILE, max_examples=60)
@given(
    kind=st.sampled_from(KINDS),
    data_dim=st.one_of(
        st.integers(-1, 5),
        st.floats(-2, 6),
        st.tuples(st.integers(0, 2), st.sampled_from([2, 3, 4]), st.sampled_from([2, 4])),
        st.booleans(),
    ),
    latent_dim=st.one_of(st.none(), st.integers(-1, 6), st.floats(0, 4), st.booleans()),
    context_dim=st.one_of(st.integers(-1, 2), st.floats(0, 2)),
    data=st.data(),
)
def test_make_model_refuses_or_builds(kind, data_dim, latent_dim, context_dim, data):
    keys = st.sampled_from(ARCHITECTURE_KEYS[kind])
    overrides = data.draw(st.dictionaries(keys, ANY_VALUE, max_size=2), label="overrides")
    options = {**tiny(kind), **overrides}
    try:
        model = make_model(kind, data_dim, latent_dim, context_dim, **options)
    except REFUSALS:
        return
    assert isinstance(model, Model)
    # a model that was built works: sampling and encoding valid inputs gives finite values
    context = torch.zeros(model.context_dim) if model.context_dim else None
    with torch.no_grad():
        x = model.sample(2, context)
        assert_finite(x)
        batch_context = None if context is None else context.expand(2, -1)
        assert_finite(model.encode(x, batch_context))


def _array(draw, shape, dtype) -> np.ndarray:
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.one_of(
            st.floats(-3, 3, width=np.dtype(dtype).itemsize * 8),
            st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e-30, -1e30, 1e30, 1e-16, 1e20]),
        ).map(lambda v: np.asarray(v).astype(dtype).item())
    return draw(hnp.arrays(dtype, shape, elements=elements))


DTYPES = [np.float16, np.float32, np.float64, np.int64, np.bool_, np.complex64]


@st.composite
def model_and_inputs(draw):
    kind = draw(st.sampled_from(KINDS))
    d = draw(st.integers(2, 4))
    n = d if kind == "af" else draw(st.integers(1, d - 1))
    c = draw(st.integers(0, 1))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    model = make_model(kind, d, None if kind == "af" else n, c, seed=0, **tiny(kind)).to(dtype)
    with torch.no_grad():  # move away from the identity initialisation
        gen = torch.Generator().manual_seed(draw(st.integers(0, 3)))
        for p in model.parameters():
            p.add_((0.3 * torch.randn(p.shape, generator=gen)).to(dtype))
    batch = draw(st.integers(0, 3))
    good = draw(st.integers(0, 3)) > 0  # mostly well-shaped inputs with random values
    shape_x = (batch, d) if good else draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    shape_u = (batch, n) if good else draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    x = _array(draw, shape_x, draw(st.sampled_from(DTYPES)) if not good else np.float64)
    u = _array(draw, shape_u, np.float64)
    choice = draw(st.integers(0, 3))
    if choice == 0:  # wrong: given to an unconditional model, or of the wrong width
        context = None if c else np.zeros((batch, 2))
    else:
        context = _array(draw, (batch, c), np.float64) if c else None
    return model, x, u, context, draw(st.integers(-1, 3))


@PROFILE
@given(case=model_and_inputs())
def test_model_methods_refuse_or_return_finite(case):
    model, x, u, context, num = case
    calls = {
        "encode": (lambda: model.encode(x, context), False),
        "project": (lambda: model.project(x, context), False),
        "decode": (lambda: model.decode(u, context), False),
        "latent_log_prob": (lambda: model.latent_log_prob(u, context), True),
        "sample": (lambda: model.sample(num, context), False),
    }
    if model.kind != "pae":  # PAE documents that it has no density of x
        calls["log_prob"] = (lambda: model.log_prob(x, context), True)
    for name, (call, log_density) in calls.items():
        try:
            with torch.no_grad():
                out = call()
        except REFUSALS:
            continue
        assert_finite(out, log_density), name


@PROFILE
@given(
    kind=st.sampled_from(KINDS),
    n_samples=st.sampled_from([0, 1, 3, 12, 12, 12]),
    bad=st.sampled_from([None, None, None, "nan", "inf", "huge", "int"]),
    options=st.just({})
    | st.dictionaries(
        st.sampled_from(["batch_size", "lr", "validation_split", "algorithm"]),
        st.one_of(
            st.integers(-1, 4),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from(["likelihood", "sequential", "pae", "bogus"]),
        ),
        max_size=1,
    ),
)
def test_fit_refuses_or_trains(kind, n_samples, bad, options):
    torch.manual_seed(0)
    model = make_model(kind, 3, None if kind == "af" else 2, seed=0, **tiny(kind))
    x = np.random.default_rng(0).normal(size=(n_samples, 3))
    if bad == "nan" and n_samples:
        x[0, 0] = np.nan
    elif bad == "inf" and n_samples:
        x[-1, 1] = np.inf
    elif bad == "huge":
        x = x * 1e30
    elif bad == "int":
        x = x.astype(np.int64)
    algorithm = {"pae": "pae", "af": "likelihood", "fom": "likelihood", "pie": "likelihood"}
    kwargs = {"algorithm": algorithm.get(kind, "sequential"), **options}
    kwargs.setdefault("batch_size", 4)
    try:  # two epochs: the sequential schemes need one per stage
        history = mflows.fit(model, x, epochs=2, progress=False, **kwargs)
    except REFUSALS:
        return
    assert history is not None
    for p in model.parameters():
        assert torch.isfinite(p).all()

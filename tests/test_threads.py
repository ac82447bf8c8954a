"""Thread policy: the user's choice wins, small models get one thread, restore on exit."""

from __future__ import annotations

import pytest
import torch

from mflows import threads
from mflows.errors import InvalidArgumentError
from mflows.models import make_model


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """No thread settings in the environment; torch's count restored after each test."""
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_STARTUP", before)
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "_natural_defaults", lambda: {before, 4})
    yield
    torch.set_num_threads(before)


def test_small_model_gets_one_thread_and_large_work_more():
    model = make_model("mflow", 3, 2, context_dim=1, seed=0)
    assert threads.recommended_threads(model, 100) == 1
    assert threads.recommended_threads(parameters=3 * 10**6, batch_size=100) == 1  # 40 -> 14
    assert threads.recommended_threads(parameters=10**6, batch_size=1000) == 2
    assert threads.recommended_threads(parameters=10**7, batch_size=1000) == 4  # capped


def test_image_models_count_pixels():
    class Image(torch.nn.Module):
        data_dim = (3, 32, 32)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(40_000))

    assert threads.recommended_threads(Image(), 100) == 4
    assert threads.recommended_threads(parameters=10_000, batch_size=100) == 1


def test_apply_sets_policy_when_user_set_nothing():
    torch.set_num_threads(2)
    threads._STARTUP = 2
    threads._natural_defaults = lambda: {2}
    assert threads.user_threads() is None
    assert threads.apply_default_policy(make_model("af", 3, seed=0), 100) == 1
    assert torch.get_num_threads() == 1
    # applying again keeps treating the count as ours, not as a user choice
    assert threads.user_threads() is None


@pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_environment_variable_is_respected(monkeypatch, name):
    torch.set_num_threads(2)
    threads._STARTUP = 2
    monkeypatch.setenv(name, "2")
    assert threads.user_threads() == 2
    assert threads.apply_default_policy(make_model("af", 3, seed=0), 100) == 2
    assert torch.get_num_threads() == 2


def test_set_num_threads_by_the_user_is_respected():
    threads._STARTUP = 1
    torch.set_num_threads(3)  # the user's call after mflows was imported
    assert threads.user_threads() == 3
    assert threads.apply_default_policy(make_model("af", 3, seed=0), 100) == 3
    assert torch.get_num_threads() == 3


def test_unusual_startup_count_means_the_user_set_it_before_import():
    torch.set_num_threads(3)
    threads._STARTUP = 3
    threads._natural_defaults = lambda: {2, 4}
    assert threads.user_threads() == 3


def test_explicit_argument_wins_over_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.apply_default_policy(threads=2) == 2
    assert torch.get_num_threads() == 2
    with pytest.raises(InvalidArgumentError):
        threads.apply_default_policy(threads=0)
    with pytest.raises(InvalidArgumentError):
        threads.apply_default_policy(threads=1.5)


def test_context_manager_restores_previous_count():
    torch.set_num_threads(2)
    threads._STARTUP = 2
    threads._natural_defaults = lambda: {2}
    with threads.thread_policy(make_model("af", 3, seed=0), 100) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads.thread_policy(threads=3) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), threads.thread_policy(threads=3):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2

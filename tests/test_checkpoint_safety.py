"""Checkpoints are read as plain data: a crafted file never runs code, a broken one gets a clear
CheckpointError, and resuming refuses a checkpoint written for another run (ResumeMismatchError,
naming what differs)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import mflows.data
from mflows.errors import CheckpointError, MflowsError, ResumeMismatchError
from mflows.models import make_model
from mflows.training import Phase, Schedule, Stage, TrainState, fit, load_checkpoint
from mflows.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint


class _RunsCode:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def tiny(seed: int = 0, **arch):
    options = dict(
        outer_layers=2, inner_layers=2, hidden_features=16, num_blocks=1, num_bins=4,
        tail_bound=6.0, seed=seed,
    )  # fmt: skip
    options.update(arch)
    return make_model("mflow", 3, 2, **options)


@pytest.fixture(scope="module")
def power():
    return mflows.data.get("power").load("train", n=80, seed=3)


KW = dict(algorithm="alternating", epochs=1, batch_size=20, progress=False)


def _crafted(path, marker):
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "progress": _RunsCode(f"touch {marker}"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def test_the_crafted_payload_is_live(tmp_path):
    # Guard for the test below: unpickling this file without weights_only DOES run the command.
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "checkpoint.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_crafted_checkpoint_runs_no_code(power, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    path = _crafted(run / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="plain data") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="delete"):
        fit(model, power.x, checkpoint_dir=run, resume=True, **KW)
    assert not marker.exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_corrupt_checkpoint_says_what_to_do(power, tmp_path, damage):
    fit(tiny(), power.x, checkpoint_dir=tmp_path, **KW)
    path = tmp_path / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    if damage == "flip":  # a bit flip in the zip directory at the end of the file
        data[-30] ^= 0xFF
    path.write_bytes({"truncate": data[: len(data) // 2], "flip": data, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"corrupt.*delete") as info:
        fit(tiny(), power.x, checkpoint_dir=tmp_path, resume=True, **KW)
    assert str(path) in str(info.value)
    assert isinstance(info.value, MflowsError)


def test_random_bytes_are_reported_as_corrupt(tmp_path):
    import random

    rng = random.Random(0)
    path = tmp_path / "checkpoint.pt"
    for i in range(200):  # random garbage trips many different errors inside torch.load
        blob = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 64, 600])))
        path.write_bytes(b"\x80\x02" + blob if i % 2 else blob)
        with pytest.raises(CheckpointError, match=r"truncated or corrupt.*delete"):
            load_checkpoint(path)


def test_old_or_foreign_checkpoints_are_refused(tmp_path):
    save_checkpoint({"format": CHECKPOINT_FORMAT, "version": 1}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="another version"):
        load_checkpoint(tmp_path / "a.pt")
    save_checkpoint({"weights": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="not an mflows training checkpoint"):
        load_checkpoint(tmp_path / "b.pt")
    with open(tmp_path / "c.pt", "wb") as handle:  # a plain pickle, not a torch zip file
        pickle.dump({"format": CHECKPOINT_FORMAT}, handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "c.pt")


def test_checkpoints_hold_only_plain_data(power, tmp_path):
    fit(tiny(), power.x, checkpoint_dir=tmp_path, patience=2, **{**KW, "epochs": 3})
    # stop after one epoch to get a mid-stage checkpoint with optimiser and early-stopping state
    with pytest.raises(KeyboardInterrupt):

        def stop(epoch, record):
            raise KeyboardInterrupt

        fit(tiny(), power.x, checkpoint_dir=tmp_path / "mid", callback=stop, **{**KW, "epochs": 3})
    state = load_checkpoint(tmp_path / "mid")  # weights_only=True succeeded
    resumed = TrainState.from_checkpoint(state)
    assert resumed.epoch == 1 and not resumed.finished
    assert len(resumed.optimizers) == 2 and resumed.early_stopping.best_epoch == 1

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, bool, int, float, torch.Tensor))

    assert plain(state)


# ----------------------------------------------------------------------------- fingerprint
def _resume(model, x, run, **kwargs):
    return fit(model, x, checkpoint_dir=run, resume=True, **{**KW, **kwargs})


def test_resume_refuses_other_data(power, tmp_path):
    fit(tiny(), power.x, checkpoint_dir=tmp_path, **KW)
    other = power.x.copy()
    other[0, 0] += 1e-3
    with pytest.raises(ResumeMismatchError, match=r"data\.train\.x \(same shape, different values"):
        _resume(tiny(), other, tmp_path)
    with pytest.raises(ResumeMismatchError, match=r"cannot resume.*data\.train\.x\.shape"):
        _resume(tiny(), power.x[:60], tmp_path)
    with pytest.raises(ResumeMismatchError, match=r"data\.train\.x\.dtype"):
        _resume(tiny().double(), power.x, tmp_path)
    # the same data resumes (here: a finished run, nothing to do)
    assert len(_resume(tiny(seed=5), power.x, tmp_path)) == 1


def test_resume_refuses_other_context(power, tmp_path):
    def cond():
        return make_model("mflow", 3, 2, 1, outer_layers=2, inner_layers=2, hidden_features=16,
                          num_blocks=1, num_bins=4, tail_bound=6.0)  # fmt: skip

    fit(cond(), power.x, power.theta, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ResumeMismatchError, match=r"data\.train\.context"):
        fit(cond(), power.x, power.theta + 1.0, checkpoint_dir=tmp_path, resume=True, **KW)


def test_resume_refuses_another_model(power, tmp_path):
    fit(tiny(), power.x, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ResumeMismatchError, match=r"model\.config\.architecture\.hidden_features"):
        _resume(tiny(hidden_features=8), power.x, tmp_path)
    with pytest.raises(ResumeMismatchError, match=r"model\.config\.architecture\.num_bins: 4"):
        _resume(tiny(num_bins=5), power.x, tmp_path)


def test_resume_refuses_another_schedule_or_options(power, tmp_path):
    fit(tiny(), power.x, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ResumeMismatchError, match=r"schedule\.algorithm: 'alternating'"):
        _resume(tiny(), power.x, tmp_path, algorithm="sequential", epochs=2)
    with pytest.raises(ResumeMismatchError, match=r"schedule\.stages"):
        _resume(tiny(), power.x, tmp_path, epochs=2)
    with pytest.raises(ResumeMismatchError, match=r"options\.lr: 0\.001.*0\.002"):
        _resume(tiny(), power.x, tmp_path, lr=2e-3)
    with pytest.raises(ResumeMismatchError, match=r"options\.weight_decay"):
        _resume(tiny(), power.x, tmp_path, weight_decay=0.0)
    with pytest.raises(ResumeMismatchError, match=r"schedule_options\.alternate"):
        _resume(tiny(), power.x, tmp_path, alternate="epoch")
    custom = Schedule((Stage((Phase("m", "manifold", {"mse": 1.0}),), 1),))
    with pytest.raises(ResumeMismatchError, match=r"schedule"):
        fit(tiny(), power.x, schedule=custom, checkpoint_dir=tmp_path, resume=True,
            batch_size=20, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="cannot resume"):  # still a ValueError for old callers
        _resume(tiny(), power.x, tmp_path, seed=1)

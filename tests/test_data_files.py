"""Tests of the file-backed data sets and the download machinery (mflows.data.download)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import ClassVar
from urllib.error import URLError

import numpy as np
import pytest

from mflows import data
from mflows.data import download as dl
from mflows.data.download import DataNotAvailableError, RemoteFile


def _no_partial_files(directory: Path) -> bool:
    return not any(p.name.endswith(".part") for p in directory.rglob("*"))


@pytest.fixture
def offline(monkeypatch):
    """Every network access fails as it does without a connection."""

    def fail(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "urlopen", fail)


# ------------------------------------------------------------------------------------------------
# Data directory and download


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MFLOWS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert dl.data_dir() == tmp_path / "xdg" / "mflows"
    monkeypatch.setenv("MFLOWS_DATA_DIR", str(tmp_path / "env"))
    assert dl.data_dir() == tmp_path / "env"
    assert dl.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.get("gan2d").directory == tmp_path / "env" / "gan2d"
    assert data.get("gan2d", data_dir=tmp_path / "arg").directory == tmp_path / "arg" / "gan2d"


def test_download_from_local_path_verifies_checksum_atomically(tmp_path):
    src = tmp_path / "src.bin"
    payload = b"manifold" * 1000
    src.write_bytes(payload)
    good = dl.sha256sum(src)
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(ValueError, match="checksum mismatch"):
        dl.download(str(src), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and _no_partial_files(tmp_path)
    with pytest.raises(ValueError, match="size mismatch"):
        dl.download(str(src), dest, size=3, progress=False)
    assert not dest.exists() and _no_partial_files(tmp_path)
    assert dl.download(src.as_uri(), dest, sha256=good, progress=False) == good
    assert dest.read_bytes() == payload


def test_download_over_http_streams_and_verifies(tmp_path, monkeypatch):
    payload = np.arange(1000, dtype=np.uint8).tobytes()

    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(payload)),
        }

    seen = []

    def fake_urlopen(request, timeout=None):
        seen.append(request.full_url)
        return Response(payload)

    monkeypatch.setattr(dl, "urlopen", fake_urlopen)
    dest = tmp_path / "f.npy"
    digest = dl.download("https://example.org/f.npy", dest, progress=False)
    assert dest.read_bytes() == payload and seen == ["https://example.org/f.npy"]
    assert len(digest) == 64

    class Html(Response):
        headers: ClassVar[dict[str, str]] = {"Content-Type": "text/html; charset=utf-8"}

    monkeypatch.setattr(dl, "urlopen", lambda request, timeout=None: Html(b"<html>quota</html>"))
    with pytest.raises(OSError, match="HTML"):
        dl.download("https://example.org/g.npy", tmp_path / "g.npy", progress=False)
    assert not (tmp_path / "g.npy").exists() and _no_partial_files(tmp_path)


def test_fetch_offline_gives_one_clear_error(tmp_path, offline):
    files = [RemoteFile("a.npy", "https://example.org/a"), RemoteFile("b.npy", None)]
    with pytest.raises(DataNotAvailableError) as info:
        dl.fetch("toy", files, tmp_path / "toy", progress=False)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "'toy'" in message and "a.npy" in message and "b.npy" in message
    assert "name resolution" in message and str(tmp_path / "toy") in message
    assert "MFLOWS_DATA_DIR" in message
    assert not (tmp_path / "toy" / "a.npy").exists() and _no_partial_files(tmp_path)


def test_fetch_with_bad_published_checksum_leaves_nothing(tmp_path):
    src = tmp_path / "src.npy"
    np.save(src, np.arange(10))
    target = tmp_path / "set"
    with pytest.raises(DataNotAvailableError, match="checksum mismatch"):
        dl.fetch("toy", [RemoteFile("x.npy", str(src), sha256="f" * 64)], target, progress=False)
    assert not (target / "x.npy").exists() and _no_partial_files(tmp_path)
    good = RemoteFile("x.npy", str(src), sha256=dl.sha256sum(src))
    paths = dl.fetch("toy", [good], target, progress=False)
    np.testing.assert_array_equal(np.load(paths["x.npy"]), np.arange(10))


# ------------------------------------------------------------------------------------------------
# lhc40d


def _write_lhc(directory: Path, rng: np.random.Generator, n: int = 50) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True)
    arrays = {
        "x_train.npy": rng.normal(100, 50, size=(n, 40)).astype(np.float32),
        "theta_train.npy": rng.normal(size=(n, 2)).astype(np.float32),
        "t_xz_train.npy": rng.normal(size=(n, 2)).astype(np.float32),
    }
    for suffix, theta in (("", (0, 0)), ("1", (0.5, 0)), ("2", (-1, -1))):
        arrays[f"x_test{suffix}.npy"] = rng.normal(100, 50, size=(20, 40)).astype(np.float32)
        arrays[f"theta_test{suffix}.npy"] = np.tile(np.float32(theta), (20, 1))
    for name, array in arrays.items():
        np.save(directory / name, array)
    return arrays


def test_lhc40d_round_trip_constants_and_splits(tmp_path, offline):
    raw = _write_lhc(tmp_path / "lhc40d", np.random.default_rng(0))
    ds = data.get("lhc40d", data_dir=tmp_path)
    assert len(ds.features) == 40 and ds.means.shape == ds.stds.shape == (40,)
    assert len(ds.closure_tests) == 26 and ds.features[29] == "m_aa"
    train, val = ds.load("train"), ds.load("val")
    assert train.x.shape == (45, 40) and val.x.shape == (5, 40)  # val_fraction 0.1
    assert train.x.dtype == np.float32 and train.scores.shape == (45, 2)
    np.testing.assert_allclose(train.x, (raw["x_train.npy"][:45] - ds.means) / ds.stds, rtol=1e-5)
    np.testing.assert_allclose(val.theta, raw["theta_train.npy"][45:])
    np.testing.assert_allclose(val.scores, raw["t_xz_train.npy"][45:])
    for split, theta in ds.test_thetas.items():
        batch = ds.load(split, n=7)
        assert batch.x.shape == (7, 40) and batch.scores is None
        np.testing.assert_allclose(batch.theta, np.tile(theta, (7, 1)))
    np.testing.assert_allclose(ds.unstandardise(ds.load("test").x), raw["x_test.npy"], rtol=1e-4)
    with pytest.raises(ValueError, match="only 45"):
        ds.load("train", n=46)
    with pytest.raises(ValueError, match="unknown split"):
        ds.load("test3")
    np.testing.assert_allclose(ds.log_prior(np.zeros((1, 2))), [-math.log(2 * math.pi)])
    assert ds.sample_prior(4, seed=0).shape == (4, 2)
    with pytest.raises(NotImplementedError, match="not a simulator"):
        ds.sample(3)


def test_lhc40d_refuses_corrupted_file_after_first_use(tmp_path, offline):
    _write_lhc(tmp_path / "lhc40d", np.random.default_rng(0))
    ds = data.get("lhc40d", data_dir=tmp_path)
    ds.load("train")
    sums = (tmp_path / "lhc40d" / "SHA256SUMS").read_text()
    assert "x_train.npy" in sums and "t_xz_train.npy" in sums
    path = tmp_path / "lhc40d" / "x_train.npy"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataNotAvailableError, match=r"x_train\.npy: checksum mismatch"):
        ds.load("train")
    assert _no_partial_files(tmp_path)


def test_lhc40d_offline_without_files(tmp_path, offline):
    with pytest.raises(DataNotAvailableError) as info:
        data.get("lhc40d", data_dir=tmp_path).load("train")
    message = str(info.value)
    for name in ("x_train.npy", "theta_train.npy", "t_xz_train.npy"):
        assert name in message
    assert "drive.usercontent.google.com" in message and str(tmp_path / "lhc40d") in message
    assert not any((tmp_path / "lhc40d").glob("*.npy")) and _no_partial_files(tmp_path)


# ------------------------------------------------------------------------------------------------
# Images


def _write_images(directory: Path, n: int, channels_last: bool, rng) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n, 3, 64, 64), dtype=np.uint8)
    stored = images.transpose(0, 2, 3, 1) if channels_last else images
    np.save(directory / ("train.npy" if n > 10 else "test.npy"), stored)
    return images


@pytest.mark.parametrize("channels_last", [False, True])
def test_gan2d_round_trip_dequantisation_and_layout(tmp_path, offline, channels_last):
    rng = np.random.default_rng(0)
    train = _write_images(tmp_path / "gan2d", 20, channels_last, rng)
    test = _write_images(tmp_path / "gan2d", 6, channels_last, rng)
    ds = data.get("gan2d", data_dir=tmp_path)
    assert ds.data_dim == (3, 64, 64) and ds.latent_dim == 2
    batch = ds.load("train", seed=1)
    assert batch.x.shape == (18, 3, 64, 64) and batch.x.dtype == np.float32 and batch.theta is None
    np.testing.assert_array_equal(np.floor(batch.x), train[:18])  # U[0, 1) noise, no flips
    noise = batch.x - train[:18]
    assert 0.0 <= noise.min() and noise.max() < 1.0 and abs(noise.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(ds.load("train", seed=1).x, batch.x)
    assert not np.array_equal(ds.load("train", seed=2).x, batch.x)
    np.testing.assert_array_equal(ds.load("test").x, test)  # no noise on test by default
    np.testing.assert_array_equal(ds.load("val").x.round(), ds.load("val").x)
    assert ds.load("val").x.shape[0] == 2
    scaled = data.get("gan2d", data_dir=tmp_path, rescale=True, dequantize="all").load("test")
    assert -1.0 <= scaled.x.min() and scaled.x.max() < 1.0


def test_celeba_random_flips_and_gan64d_parameters(tmp_path, offline):
    rng = np.random.default_rng(0)
    train = _write_images(tmp_path / "celeba", 40, False, rng)
    x = data.get("celeba", data_dir=tmp_path, dequantize="none", val_fraction=0.0).load("train").x
    flipped = np.all(x == train[..., ::-1], axis=(1, 2, 3))
    same = np.all(x == train, axis=(1, 2, 3))
    assert np.all(flipped | same) and 5 < flipped.sum() < 35
    assert data.get("celeba").latent_dim is None

    images = _write_images(tmp_path / "gan64d", 30, False, rng)
    np.save(tmp_path / "gan64d" / "params_train.npy", np.arange(30, dtype=np.float64))
    ds = data.get("gan64d", data_dir=tmp_path, dequantize="none")
    batch = ds.load("train", n=10)
    np.testing.assert_array_equal(batch.x, images[:10])
    np.testing.assert_array_equal(batch.theta, np.arange(10, dtype=np.float32)[:, None])
    assert ds.latent_dim == 64 and ds.parameter_dim == 1
    np.testing.assert_allclose(ds.log_prior(np.array([0.0])), [-0.5 * math.log(2 * math.pi)])
    with pytest.raises(DataNotAvailableError, match=r"params_test\.npy"):
        ds.load("test")


def test_images_refuse_wrong_dtype(tmp_path, offline):
    (tmp_path / "imagenet").mkdir()
    np.save(tmp_path / "imagenet" / "test.npy", np.zeros((2, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        data.get("imagenet", data_dir=tmp_path).load("test")


def test_image_download_offline_names_files_and_leaves_nothing(tmp_path, offline):
    with pytest.raises(DataNotAvailableError) as info:
        data.get("imagenet", data_dir=tmp_path).load("train")
    message = str(info.value)
    assert "train.npy" in message and "imagenet" in message and "data_dir" in message
    assert not (tmp_path / "imagenet" / "train.npy").exists() and _no_partial_files(tmp_path)

r"""Fréchet inception distance (FID) between two image sets.

.. math::
    \mathrm{FID} = |\mu_1 - \mu_2|^2 + \mathrm{Tr}\left(\Sigma_1 + \Sigma_2
    - 2 (\Sigma_1 \Sigma_2)^{1/2}\right)

over features of a network: the mean and covariance of each set's features. The standard
features are the 2048 pool3 activations of the TensorFlow InceptionV3 used by the original FID
code, here rebuilt in plain torch (the variant ported by pytorch-fid: average pools that ignore
padding, a max pool in the last block). Its weights are read from a local file,
``pt_inception-2015-12-05-6726825d.pth``, given by path or the environment variable
``MFLOWS_INCEPTION_WEIGHTS``; nothing is downloaded.

For simulated images (``blobs``), where no Inception file may be at hand,
:func:`offline_scores` computes FID and KID on the features of :class:`RandomConvFeatures`, a
small convolutional network with fixed, seeded random weights: reproducible anywhere, but
comparable only within one benchmark.

References:
    GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium.
    M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler and S. Hochreiter, NeurIPS 2017,
    arXiv:1706.08500.

    Rethinking the Inception Architecture for Computer Vision.
    C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens and Z. Wojna, CVPR 2016, arXiv:1512.00567.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mflows.evaluation.metrics import to_numpy

__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "InceptionV3Features",
    "RandomConvFeatures",
    "compute_features",
    "fid",
    "find_inception_weights",
    "frechet_distance",
    "kid",
    "load_inception",
    "offline_features",
    "offline_scores",
    "offline_scores_of_features",
]

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    + INCEPTION_WEIGHTS_FILE
)
WEIGHTS_ENV = "MFLOWS_INCEPTION_WEIGHTS"


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, method: str = "eigh") -> float:
    r"""Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    .. math:: |\mu_1 - \mu_2|^2 + \mathrm{Tr}(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1\Sigma_2)^{1/2})

    ``method="eigh"`` (default) uses
    :math:`\mathrm{Tr}(\Sigma_1\Sigma_2)^{1/2} = \sum_i \sqrt{\lambda_i}` with
    :math:`\lambda_i` the eigenvalues of the symmetric :math:`\Sigma_1^{1/2}\Sigma_2
    \Sigma_1^{1/2}` (similar to :math:`\Sigma_1\Sigma_2`): two symmetric eigendecompositions,
    real by construction, about 20 times faster than ``sqrtm`` at k = 512.
    ``method="sqrtm"`` is the reference FID code's path: :func:`scipy.linalg.sqrtm` of
    :math:`\Sigma_1\Sigma_2`; if it is singular or inaccurate, 1e-6 times the identity is added
    to both covariances, and imaginary parts from round-off (below 1e-3 relative) are dropped.
    Both agree to round-off on full-rank covariances.

    Args:
        mu1: Mean, shape ``(k,)``.
        sigma1: Covariance, shape ``(k, k)``.
        mu2: Mean, shape ``(k,)``.
        sigma2: Covariance, shape ``(k, k)``.
        method: ``"sqrtm"`` or ``"eigh"``.
    """
    from scipy import linalg

    mu1, mu2 = to_numpy(mu1).reshape(-1), to_numpy(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(to_numpy(sigma1)), np.atleast_2d(to_numpy(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"expected means of shape (k,) and covariances (k, k), got {mu1.shape}, "
            f"{s1.shape}, {mu2.shape}, {s2.shape}"
        )
    diff = mu1 - mu2
    if method == "eigh":
        w1, v1 = linalg.eigh(s1)
        root1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
        inner = root1 @ s2 @ root1
        eig = linalg.eigvalsh(0.5 * (inner + inner.T))
        trace_covmean = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    elif method == "sqrtm":
        with np.errstate(all="ignore"):
            covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all() or _sqrtm_error(covmean, s1 @ s2) > 1e-3:
            offset = np.eye(s1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            scale = max(1.0, np.abs(covmean).max())
            if np.abs(covmean.imag).max() > 1e-3 * scale:
                imag = np.abs(covmean.imag).max()
                raise ValueError(f"sqrtm has a large imaginary part {imag:.3g}")
            covmean = covmean.real
        trace_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"expected method in ('sqrtm', 'eigh'), got {method!r}")
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_covmean
    return float(max(value, 0.0))


def _sqrtm_error(root: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(root @ root - target).max() / max(1.0, np.abs(target).max()))


# ---------------------------------------------------------------------------------------------
# InceptionV3 (FID variant). Module and attribute names follow the weight file's keys.


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3) and ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: Any, stride: int = 1, padding: Any = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    # TensorFlow's average pool leaves the zero padding out of the average
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 64, 1)
        self.branch5x5_1 = _ConvBN(c_in, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class _BlockB(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = _ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 192, 1)
        self.branch7x7_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _BlockD(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(c_in, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(c_in, 320, 1)
        self.branch3x3_1 = _ConvBN(c_in, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        # the FID network uses a max pool in its last block (a quirk of the TF graph)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """InceptionV3 of the FID reference code up to the 2048-d pool3 features.

    Input: images of shape ``(B, 3, H, W)`` with values in ``[0, input_range]``; they are
    resized to ``resize_to`` x ``resize_to`` (bilinear; 299 as in the reference, ``None`` keeps
    the size, which must be at least 75), scaled to [-1, 1] and mapped to ``(B, 2048)``
    features. Build with random weights and call :meth:`load_weights`, or use
    :func:`load_inception`.
    """

    def __init__(self, input_range: float = 255.0, resize_to: int | None = 299):
        super().__init__()
        self.input_range = input_range
        self.resize_to = resize_to
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images.shape == (B, 3, H, W), got {tuple(images.shape)}")
        x = images
        if self.resize_to is not None:
            size = (self.resize_to, self.resize_to)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = 2.0 * x / self.input_range - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))

    def load_weights(self, path: str | os.PathLike) -> InceptionV3Features:
        """Loads a pytorch-fid style state dict; the 1008-class ``fc`` layer is ignored."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path} is not an FID Inception weight file ({INCEPTION_WEIGHTS_FILE}): "
                f"missing keys {missing[:5]}, unexpected keys {result.unexpected_keys[:5]}"
            )
        self.eval()
        return self


def find_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """Path of the Inception weight file, checked to exist.

    Args:
        weights: The file, or a folder holding ``pt_inception-2015-12-05-6726825d.pth``;
            defaults to the environment variable ``MFLOWS_INCEPTION_WEIGHTS``.

    Raises:
        FileNotFoundError: When the file is absent, naming the file and where to get it.
    """
    candidate = weights if weights is not None else os.environ.get(WEIGHTS_ENV)
    if candidate is not None and Path(candidate).is_dir():
        candidate = Path(candidate) / INCEPTION_WEIGHTS_FILE
    if candidate is None or not Path(candidate).is_file():
        where = f"'{candidate}'" if candidate is not None else "nowhere (no path given)"
        raise FileNotFoundError(
            f"FID needs the Inception weights file {INCEPTION_WEIGHTS_FILE}, looked {where}. "
            f"Download it from {INCEPTION_WEIGHTS_URL} and pass its path as `weights=` or set "
            f"the environment variable {WEIGHTS_ENV}."
        )
    return Path(candidate)


_weights_path = find_inception_weights  # older private name, kept for compatibility


def load_inception(
    weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> InceptionV3Features:
    """Builds the FID InceptionV3 and loads its weights from a local file.

    Args:
        weights: Path of ``pt_inception-2015-12-05-6726825d.pth`` (or its folder); defaults to
            the environment variable ``MFLOWS_INCEPTION_WEIGHTS``.
        device: Device to put the network on.

    Raises:
        FileNotFoundError: When the file is absent, naming the file and where to get it.
    """
    return InceptionV3Features().load_weights(find_inception_weights(weights)).to(device)


def compute_features(
    images: Any,
    feature_extractor: Callable[[Tensor], Tensor],
    batch_size: int = 50,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Features of images in batches, shape ``(N, k)``.

    Args:
        images: Images, shape ``(N, C, H, W)`` (channel-last ``(N, H, W, C)`` with C in
            {1, 3} is transposed); grey-scale images are repeated to 3 channels only for the
            Inception network.
        feature_extractor: Callable ``(B, C, H, W) float tensor -> (B, k)``.
        batch_size: Images per forward pass.
        device: Device for the images (that of the extractor's parameters by default).
    """
    if isinstance(images, torch.Tensor):
        x = images.detach()
    else:
        x = torch.as_tensor(np.asarray(images))
    if x.dim() != 4:
        raise ValueError(f"expected images.shape == (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if device is None and isinstance(feature_extractor, nn.Module):
        params = list(feature_extractor.parameters())
        device = params[0].device if params else None
    if isinstance(feature_extractor, InceptionV3Features) and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    feats = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(dtype=torch.float32, device=device)
            out = feature_extractor(batch)
            feats.append(to_numpy(out.reshape(out.shape[0], -1)))
    return np.concatenate(feats)


def _statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def fid(
    images_a: Any,
    images_b: Any,
    feature_extractor: Callable[[Tensor], Tensor] | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    method: str = "eigh",
) -> float:
    """Fréchet inception distance between two image sets.

    Args:
        images_a: Images, shape ``(N, 3, H, W)`` (or channel-last), pixel values in [0, 255].
        images_b: Images, shape ``(M, 3, H, W)``.
        feature_extractor: Network ``(B, C, H, W) -> (B, k)``; the FID InceptionV3 (pool3,
            k = 2048) loaded from ``weights`` when ``None``.
        weights: Local Inception weight file (see :func:`load_inception`).
        batch_size: Images per forward pass.
        device: Device for the Inception network (CUDA when available by default).
        method: Matrix square-root method of :func:`frechet_distance`.

    Returns:
        The FID (0 for identical feature statistics). Use several thousand images per set for
        numbers comparable with the literature; FID is biased upwards for small sets.
    """
    if feature_extractor is None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        feature_extractor = load_inception(weights, device=device)
    mu_a, s_a = _statistics(compute_features(images_a, feature_extractor, batch_size, device))
    mu_b, s_b = _statistics(compute_features(images_b, feature_extractor, batch_size, device))
    return frechet_distance(mu_a, s_a, mu_b, s_b, method=method)


# ---------------------------------------------------------------------------------------------
# Offline features: a small convolutional network with fixed, seeded random weights.


class RandomConvFeatures(nn.Module):
    """A fixed random convolutional feature network for FID / KID without downloads.

    Three 3x3 convolutions (3 -> 32 -> 32 -> 32 channels, He-normal weights, zero biases,
    ReLU, a 2x2 average pool after the first two), then an adaptive average pool to 4 x 4:
    ``(B, 3, H, W)`` pixels in ``[0, input_range]`` (scaled to [-1, 1]) map to 512 features.
    The pooled map keeps coarse positions (a global average would make the features blind to
    where things are, which is all that varies on ``blobs`` with n = 2). The weights are drawn
    from ``torch.Generator().manual_seed(seed)`` in float64 on the CPU, so every machine builds
    the same network; nothing is trained or loaded.

    The numbers it gives (``fid_offline``, ``kid_offline``) are comparable only with numbers
    from the same network (same seed, same image size), e.g. between models on one benchmark,
    never with Inception FIDs from the literature.
    """

    def __init__(self, seed: int = 0, input_range: float = 255.0, channels: int = 32):
        super().__init__()
        self.seed = seed
        self.input_range = input_range
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, channels, 3, padding=1) for c_in in (3, channels, channels)
        )
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                weight = torch.randn(conv.weight.shape, generator=generator, dtype=torch.float64)
                conv.weight.copy_(weight * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images.shape == (B, 3, H, W), got {tuple(images.shape)}")
        x = 2.0 * images / self.input_range - 1.0
        for k, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if k < 2:
                x = F.avg_pool2d(x, 2)
        return F.adaptive_avg_pool2d(x, 4).flatten(1)


def kid(features_a: Any, features_b: Any) -> float:
    r"""Kernel inception distance: unbiased MMD^2 with the cubic polynomial kernel.

    :math:`k(x, y) = (x \cdot y / k + 1)^3` for ``k``-dimensional features (Bińkowski et al.,
    Demystifying MMD GANs, ICLR 2018, arXiv:1801.01401), on the full sets (no subsets). Unbiased:
    close to 0, and possibly slightly negative, for two samples of the same distribution.

    Args:
        features_a: ``(N, k)`` features, N >= 2.
        features_b: ``(M, k)`` features, M >= 2.
    """
    a = np.asarray(to_numpy(features_a), dtype=np.float64)
    b = np.asarray(to_numpy(features_b), dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected (N, k), (M, k) features, N, M >= 2; got {a.shape} {b.shape}")
    dim = a.shape[1]
    k_aa = (a @ a.T / dim + 1.0) ** 3
    k_bb = (b @ b.T / dim + 1.0) ** 3
    k_ab = (a @ b.T / dim + 1.0) ** 3
    n, m = len(a), len(b)
    term_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
    term_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(term_a + term_b - 2.0 * k_ab.mean())


def offline_scores(
    images_a: Any, images_b: Any, seed: int = 0, batch_size: int = 250
) -> dict[str, float]:
    """FID and KID between two image sets on the features of :class:`RandomConvFeatures`.

    Args:
        images_a: Images ``(N, 3, H, W)``, pixel values in [0, 255].
        images_b: Images ``(M, 3, H, W)``.
        seed: Seed of the feature network.
        batch_size: Images per forward pass.

    Returns:
        ``{"fid_offline": ..., "kid_offline": ...}``.
    """
    features = offline_features(images_a, images_b, seed=seed, batch_size=batch_size)
    return offline_scores_of_features(*features)


def offline_features(*image_sets: Any, seed: int = 0, batch_size: int = 250) -> list[np.ndarray]:
    """The :class:`RandomConvFeatures` features (network seed ``seed``) of each image set, on
    the CPU, in the order given (for :func:`offline_scores_of_features`)."""
    network = RandomConvFeatures(seed=seed)
    return [compute_features(images, network, batch_size, "cpu") for images in image_sets]


def offline_scores_of_features(features_a: Any, features_b: Any) -> dict[str, float]:
    """:func:`offline_scores` of features already computed by :func:`offline_features`
    (to score several image sets against one without computing its features again)."""
    mu_a, s_a = _statistics(features_a)
    mu_b, s_b = _statistics(features_b)
    return {
        "fid_offline": frechet_distance(mu_a, s_a, mu_b, s_b),
        "kid_offline": kid(features_a, features_b),
    }

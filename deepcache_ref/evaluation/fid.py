"""FID with pytorch-fid's Inception (pool3 by default): the images a side holds, their statistics,
and the Fréchet distance in float64.

A side is a folder of images, an npz of uint8 NHWC images (`arr_0`), or precomputed statistics
(`mu`, `sigma`). A folder written by `sample.py` (it has `settings.json`) contributes exactly its
samples, `{seed:06d}.png`, never `grid.png`, logs or npz files beside them.
"""

import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..catalogue import INCEPTION_URL
from ..core.checkpoint import safe_load
from ..errors import UserError
from ..runs.record import SETTINGS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
SAMPLE = re.compile(r"\d{6,}\.png")


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64 via symmetric eigensolves."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def feature_statistics(features):
    """(mean, covariance) of features [N, D], float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise UserError(f"statistics need at least 2 feature vectors, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)


def pixel_vectors(path, value_max):
    """The `images` of an npz as float64 pixel vectors in [0, 1] (for FD_pix)."""
    try:
        with np.load(path) as f:
            images = f["images"]
    except (OSError, EOFError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not an npz with an `images` array ({str(e).strip().splitlines()[0]})") from None
    return images.reshape(len(images), -1).astype(np.float64) / value_max


def fd_pix(images, real):
    """Fréchet distance in pixel space between uint8 images [B, H, W, C] and real vectors in [0, 1]."""
    fake = np.asarray(images).reshape(len(images), -1).astype(np.float64) / 255.0
    return frechet_distance(*feature_statistics(fake), *feature_statistics(real))


def load_inception(weights, dims=2048, device="cpu"):
    """pytorch-fid's InceptionV3 with its weights from a local file (never downloaded)."""
    import pytorch_fid.inception as fid_inception


    path = Path(weights)
    if not path.is_file():
        raise UserError(f"Inception weights not found: {path}. Run `python scripts/download.py inception` (it "
                        f"fetches {INCEPTION_URL}), or pass --inception-weights PATH")
    state = safe_load(path)
    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda url, progress=True: state
    try:
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except RuntimeError as e:  # load_state_dict: missing / unexpected keys
        raise UserError(f"{path} is not pytorch-fid's Inception weights ({str(e).splitlines()[0]})") from None
    finally:
        fid_inception.load_state_dict_from_url = original
    return model.to(device).eval()


def sample_files(folder):
    """The image files of a folder: a run's samples only, or every image of any other folder."""
    folder = Path(folder)
    if (folder / SETTINGS).exists():
        files = [p for p in folder.rglob("*.png") if SAMPLE.fullmatch(p.name)
                 and (p.parent == folder or p.parent.parent == folder and p.parent.name.isdigit())]
    else:
        files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise UserError(f"no images in {folder}")
    return sorted(files)


def _npz(path):
    f = np.load(path)
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single array (.npy), not an npz of named arrays (arr_0, or mu and sigma)")
    return f


def _load(path, *keys):
    try:
        with _npz(path) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise UserError(f"{path} has no {' / '.join(missing)}: it holds {f.files} (images are arr_0, "
                                "statistics mu and sigma)")
            return [f[k] for k in keys]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        if str(e).startswith(str(path)):
            raise
        raise UserError(f"{path} is not a readable npz of arrays ({str(e).strip().splitlines()[0]})") from None


def npz_images(path):
    """`arr_0` of an npz, checked to be uint8 NHWC images with 1 or 3 channels."""
    images, = _load(path, "arr_0")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise UserError(f"{path}: arr_0 is {images.dtype} {list(images.shape)}; expected uint8 images [N, H, W, 3] "
                        "(or [N, H, W, 1]) in 0..255")
    return images


def image_batches(path, batch_size):
    """uint8 NHWC batches from a folder or an npz."""
    path = Path(path)
    if path.suffix == ".npz":
        images = npz_images(path)
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    files, size = sample_files(path), None
    for i in range(0, len(files), batch_size):
        batch = []
        for f in files[i:i + batch_size]:
            try:
                with Image.open(f) as im:
                    batch.append(np.asarray(im.convert("RGB")))
            except (OSError, ValueError, SyntaxError):
                raise UserError(f"{f} is not a readable image") from None
            if size is None:
                size = batch[-1].shape
            elif batch[-1].shape != size:
                raise UserError(f"{f} is {batch[-1].shape[1]}x{batch[-1].shape[0]}, the first image is "
                                f"{size[1]}x{size[0]}: one FID side needs images of one size")
        yield np.stack(batch)


def read_statistics(path, dims):
    """(mu, sigma) of a statistics npz, checked against the feature dimension."""
    mu, sigma = _load(path, "mu", "sigma")
    if mu.shape != (dims,) or sigma.shape != (dims, dims):
        raise UserError(f"{path}: statistics of shape mu {list(mu.shape)}, sigma {list(sigma.shape)}; expected "
                        f"[{dims}] and [{dims}, {dims}] (--dims {dims})")
    if not all(np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) for a in (mu, sigma)):
        raise UserError(f"{path}: statistics of dtype mu {mu.dtype}, sigma {sigma.dtype}; expected real numbers")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path}: the statistics hold NaN or infinite values")
    scale = max(float(np.abs(sigma).max()), 1e-12)
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * scale) or np.linalg.eigvalsh(sigma).min() < -1e-6 * scale:
        raise UserError(f"{path}: sigma is not a covariance matrix (symmetric, positive semi-definite)")
    return mu, sigma


def is_statistics_file(path):
    """Whether `path` is an npz of pytorch-fid statistics (mu, sigma) and nothing else; never raises."""
    try:
        with _npz(path) as f:
            return set(f.files) == {"mu", "sigma"}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False


def is_statistics(path):
    path = Path(path)
    if path.suffix != ".npz":
        return False
    try:
        with _npz(path) as f:
            return {"mu", "sigma"} <= set(f.files)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable npz file ({str(e).strip().splitlines()[0]})") from None


@torch.no_grad()
def activations(model, path, batch_size=50, device="cpu"):
    feats = []
    for batch in image_batches(path, batch_size):
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        pred = torch.nn.functional.adaptive_avg_pool2d(model(x)[0], 1)  # blocks below pool3 are spatial
        feats.append(pred.flatten(1).cpu().double().numpy())
    return np.concatenate(feats)


def statistics_of(path, model, dims, batch_size=50, device="cpu"):
    """(mu, sigma, number of images or None) of one side."""
    if is_statistics(path):
        return (*read_statistics(path, dims), None)
    feats = activations(model(), path, batch_size, device)
    if len(feats) < 2:
        raise UserError(f"{path}: FID needs at least 2 images, found {len(feats)}")
    return (*feature_statistics(feats), len(feats))

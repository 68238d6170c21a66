"""FID (pytorch-fid's Inception, pool3 by default) between sample images and a reference.

    python scripts/fid.py outputs/cifar10/run/ checkpoints/fid_stats_cifar10_train.npz
    python scripts/fid.py samples.npz --save-stats my_stats.npz

Each side is a folder of images, an npz of uint8 NHWC images (`arr_0`), or precomputed statistics
(`mu`, `sigma`). The Inception weights are read from a local file; nothing is downloaded unless
--allow-download is given.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_inception(weights=None, allow_download=False, dims=2048, device="cpu"):
    """pytorch-fid's InceptionV3 with weights from a local file (or, if allowed, its URL)."""
    import pytorch_fid.inception as fid_inception

    path = Path(weights) if weights else common.CHECKPOINTS / WEIGHTS_NAME
    if path.is_file():
        def local(url, progress=True):
            return torch.load(path, map_location="cpu", weights_only=True)
    elif allow_download:
        local = fid_inception.load_state_dict_from_url
    else:
        raise FileNotFoundError(f"Inception weights not found: {path}. Download {WEIGHTS_URL} and put it there "
                                "(or pass --inception-weights PATH, or --allow-download)")
    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = local
    try:
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    finally:
        fid_inception.load_state_dict_from_url = original
    return model.to(device).eval()


def image_batches(path, batch_size):
    """uint8 NHWC batches from a folder of images or an npz (`arr_0`)."""
    path = Path(path)
    if path.suffix == ".npz":
        images = np.load(path)["arr_0"]
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no images in {path}")
    for i in range(0, len(files), batch_size):
        yield np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files[i:i + batch_size]])


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


def is_stats(path):
    path = Path(path)
    return path.suffix == ".npz" and {"mu", "sigma"} <= set(np.load(path).files)


def statistics_of(path, model, batch_size, device):
    if is_stats(path):
        with np.load(path) as f:
            return f["mu"], f["sigma"], None
    feats = activations(model, path, batch_size, device)
    mu, sigma = common.feature_statistics(feats)
    return mu, sigma, len(feats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", help="folder or npz of images, or npz statistics")
    p.add_argument("reference", nargs="?", help="folder or npz of images, or npz statistics")
    p.add_argument("--save-stats", help="write the statistics of `samples` (pytorch-fid npz: mu, sigma)")
    p.add_argument("--inception-weights", help=f"local {WEIGHTS_NAME} (default: checkpoints/)")
    p.add_argument("--allow-download", action="store_true", help="fetch the Inception weights if missing")
    p.add_argument("--dims", type=int, default=2048, choices=[64, 192, 768, 2048])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="also write the result as JSON")
    args = p.parse_args(argv)
    if not args.reference and not args.save_stats:
        p.error("give a reference, or --save-stats")
    for path in (args.samples, args.reference):
        if path and not Path(path).exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    try:
        model = load_inception(args.inception_weights, args.allow_download, args.dims, args.device)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mu1, s1, n1 = statistics_of(args.samples, model, args.batch_size, args.device)
    if args.save_stats:
        np.savez(args.save_stats, mu=mu1, sigma=s1)
        print(f"saved statistics of {n1} images to {args.save_stats}", file=sys.stderr)
    if args.reference:
        mu2, s2, n2 = statistics_of(args.reference, model, args.batch_size, args.device)
        fid = common.frechet_distance(mu1, s1, mu2, s2)
        print(f"FID {fid:.4f}")
        if args.out:
            common.write_json(args.out, {"fid": fid, "samples": args.samples, "reference": args.reference,
                                         "num_samples": n1, "num_reference": n2, "dims": args.dims,
                                         "versions": common.versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

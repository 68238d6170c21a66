"""FID: the Fréchet distance against a float64 reference, and the script end to end offline."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision

from conftest import SCRIPTS
from deepcache_ref.evaluation.fid import feature_statistics, frechet_distance


def _reference_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim,n", [(8, 500), (64, 2000)])
def test_frechet_distance_matches_float64_reference(dim, n):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(loc=0.3, size=(n, dim)) @ rng.normal(size=(dim, dim))
    (mu1, s1), (mu2, s2) = feature_statistics(a), feature_statistics(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-7)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-7
    shift = np.full(dim, 2.0)  # a pure shift of the mean adds ||shift||^2
    assert frechet_distance(mu1 + shift, s1, mu1, s1) == pytest.approx(4.0 * dim, rel=1e-9)


@pytest.mark.slow
def test_fid_script_end_to_end_with_local_weights(tmp_path):
    from PIL import Image

    weights = tmp_path / "inception.pth"  # random weights with the keys pytorch-fid expects
    torch.save(torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                               init_weights=False).state_dict(), weights)
    rng = np.random.default_rng(0)
    for name, offset in (("a", 0), ("b", 60)):
        (tmp_path / name).mkdir()
        for i in range(12):
            img = rng.integers(0, 196, size=(32, 32, 3), dtype=np.uint8) + offset
            Image.fromarray(img).save(tmp_path / name / f"{i:06d}.png")
    np.savez(tmp_path / "b.npz", arr_0=np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "b").iterdir())]))

    def fid(*args):
        r = subprocess.run([sys.executable, str(SCRIPTS / "fid.py"), *map(str, args), "--inception-weights", weights,
                            "--dims", "64"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    same = float(fid(tmp_path / "a", tmp_path / "a", "--save-stats", tmp_path / "a_stats.npz").split()[1])
    assert abs(same) < 1e-6
    d_folder = float(fid(tmp_path / "a", tmp_path / "b").split()[1])
    d_npz = float(fid(tmp_path / "a", tmp_path / "b.npz").split()[1])
    d_stats = float(fid(tmp_path / "a_stats.npz", tmp_path / "b").split()[1])
    assert d_folder > 0 and d_folder == pytest.approx(d_npz, rel=1e-6) == pytest.approx(d_stats, rel=1e-6)


@pytest.mark.slow
def test_missing_inception_weights_names_file_and_url(tmp_path):
    (tmp_path / "a").mkdir()
    r = subprocess.run([sys.executable, str(SCRIPTS / "fid.py"), str(tmp_path / "a"), str(tmp_path / "a"),
                        "--inception-weights", str(tmp_path / "nope.pth")], capture_output=True, text=True)
    assert r.returncode == 2 and "nope.pth" in r.stderr and "pytorch-fid/releases" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_run_folder_contributes_its_samples_only(tmp_path):
    """grid.png, logs and npz files beside a run's images are never counted as samples."""
    from PIL import Image

    from deepcache_ref.evaluation.fid import npz_images, sample_files

    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(run / f"{i:06d}.png")
    (run / "settings.json").write_text("{}")
    samples = sample_files(run)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(run / "grid.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(run / "logs" / "000009.png")
    np.savez(run / "samples_5x16x16x3.npz", arr_0=np.zeros((5, 16, 16, 3), np.uint8))
    assert sample_files(run) == samples and len(samples) == 5
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((5, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="arr_0 is float32"):
        npz_images(tmp_path / "float.npz")


@pytest.mark.slow
def test_fid_of_a_run_with_grid_equals_the_run_without(tmp_path):
    weights = tmp_path / "inception.pth"
    torch.save(torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                               init_weights=False).state_dict(), weights)
    from PIL import Image

    rng = np.random.default_rng(2)
    for name in ("run", "ref"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i:06d}.png")
    (tmp_path / "run" / "settings.json").write_text("{}")

    def fid():
        r = subprocess.run([sys.executable, str(SCRIPTS / "fid.py"), str(tmp_path / "run"), str(tmp_path / "ref"),
                            "--inception-weights", str(weights), "--dims", "64"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    without = fid()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(tmp_path / "run" / "grid.png")
    assert fid() == without

"""The download catalogue: the names `scripts/download.py` fetches and where they come from.

Plain data, read by both sides: the downloader (`runs/download.py`) and the loaders' error hints
(`families.py`), so neither imports the other. A config's own file, size and md5 stay in its
`checkpoint:` section.
"""

HUB = "https://huggingface.co/{repo}/resolve/main/{file}"
DIFFUSERS_REPOS = tuple(f"google/ddpm-{ema}{model}" for ema in ("", "ema-")
                        for model in ("cifar10-32", "church-256", "bedroom-256", "celebahq-256"))
CONFIGS = ("cifar10", "lsun_church", "lsun_bedroom", "celeba", "celebahq", "cin256-v2")
DIFFUSERS_MIRRORS = {"celebahq": "google/ddpm-ema-celebahq-256"}  # configs whose weights are a diffusers repo
INCEPTION_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_NAME
NAMES = CONFIGS + ("inception",) + DIFFUSERS_REPOS


def downloadable(name, source=""):
    """Whether `scripts/download.py NAME` fetches this config's checkpoint (`source` from its config)."""
    return name in CONFIGS and (name in DIFFUSERS_MIRRORS or str(source).startswith(("http://", "https://")))

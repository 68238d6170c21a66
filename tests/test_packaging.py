"""The package as a researcher installs it: one top-level name, the built-in model inside it, and
no import of a bare `ddpm`, `ldm`, `samplers` or `pipeline` (names research code bases use)."""

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SCRIPTS

TAKEN = {"ddpm", "ldm", "samplers", "pipeline"}  # CompVis's `ldm`, PyPI's `pipeline`, research repos' modules
SAMPLE_DIGITS = ("import sys, deepcache_ref as d; cfg = d.load_config('digits', ['sampling.steps=5']); "
                 "images = d.Pipeline(d.load_model(cfg)).sample(range(4), cfg.sampling); "
                 "assert images.shape == (4, 8, 8, 1) and images.std() > 0; print(d.__file__)")


def _python_files():
    for folder in ("deepcache_ref", "scripts", "tests"):
        yield from (REPO / folder).rglob("*.py")


def test_no_module_imports_a_bare_top_level_name():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in TAKEN]
    assert not offenders, offenders


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_edges():
    """{module: modules of deepcache_ref it imports anywhere in its file, lazily included}."""
    modules = {_module_name(p): p for p in (REPO / "deepcache_ref").rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:  # `from . import x` imports the module x when there is one
                    targets.add(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module)
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def test_the_package_has_no_import_circles():
    edges, seen, cycles = _import_edges(), {}, []

    def visit(node, stack):
        seen[node] = "active"
        for nxt in sorted(edges[node]):
            if seen.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt, stack + [nxt])
        seen[node] = "done"

    for module in sorted(edges):
        if module not in seen:
            visit(module, [module])
    assert len(edges) > 40 and not cycles, cycles


def _decoys(root, namespace_ldm):
    """A research repo's folder: `ldm` (CompVis's, as a namespace or a regular package), `pipeline`,
    `samplers.py`, `ddpm.py`; importing any of them fails loudly."""
    boom = "raise ImportError('a decoy was imported: {}')\n"
    if namespace_ldm:  # CompVis latent-diffusion's ldm has no __init__.py
        (root / "ldm/models/diffusion").mkdir(parents=True)
        (root / "ldm/models/diffusion/ddpm.py").write_text(boom.format("ldm.models"))
    else:
        (root / "ldm").mkdir(parents=True)
        (root / "ldm/__init__.py").write_text(boom.format("ldm"))
    (root / "pipeline").mkdir()
    (root / "pipeline/__init__.py").write_text(boom.format("pipeline"))
    (root / "samplers.py").write_text(boom.format("samplers"))
    (root / "ddpm.py").write_text(boom.format("ddpm"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("namespace_ldm", [True, False], ids=["namespace-ldm", "regular-ldm"])
def test_imports_samples_and_runs_scripts_beside_research_code(tmp_path, namespace_ldm):
    decoys = _decoys(tmp_path / "research_repo", namespace_ldm)
    env = {**os.environ, "PYTHONPATH": str(decoys)}
    run = subprocess.run([sys.executable, "-c", "import ldm"], env=env, capture_output=True, text=True, cwd=decoys)
    if not namespace_ldm:
        assert "a decoy was imported" in run.stderr  # the decoys are first on sys.path
    run = subprocess.run([sys.executable, "-c", SAMPLE_DIGITS], env=env, capture_output=True, text=True, cwd=decoys)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(SCRIPTS / "sample.py"), "--config", "digits", "--seeds", "0-3",
                          "--steps", "5", "--cache-interval", "2", "--outdir", str(out)],
                         env=env, capture_output=True, text=True, cwd=decoys)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [f"{s:06d}.png" for s in range(4)]


def _site_packages_of_this_python():
    return sysconfig.get_paths()["purelib"]


@pytest.mark.slow
def test_wheel_holds_one_top_level_name_and_pip_install_runs_the_built_in_model(tmp_path):
    build = dict(capture_output=True, text=True, cwd=REPO)
    wheels = tmp_path / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(wheels), str(REPO)], **build)
    assert run.returncode == 0, run.stderr
    (wheel,) = wheels.glob("deepcache_ref-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"deepcache_ref", wheel.name.split("-py")[0] + ".dist-info"}
    for data in ("deepcache_ref/checkpoints/digits/ema.ckpt", "deepcache_ref/ddpm/configs/digits.yaml",
                 "deepcache_ref/ldm/configs/cin256-v2.yaml"):
        assert data in names

    # `pip install .` (not editable) into a fresh virtual environment; torch and the other
    # dependencies come from this interpreter's site-packages (a path, so its editable install of
    # deepcache_ref is not seen)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(_site_packages_of_this_python() + "\n")
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                          "--no-build-isolation", "-q", str(REPO)], **build)
    assert run.returncode == 0, run.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEEPCACHE_CHECKPOINTS")}
    run = subprocess.run([python, "-c", SAMPLE_DIGITS], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(purelib), "the installed copy ran, not the repository's"
    out = tmp_path / "out"
    run = subprocess.run([python, "scripts/sample.py", "--config", "digits", "--seeds", "0-1", "--steps", "5",
                          "--outdir", str(out)], capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr
    assert len(list(out.glob("*.png"))) == 2

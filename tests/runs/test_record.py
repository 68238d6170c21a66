"""Settings records (`runs/record.py`): what a folder's fingerprint holds, and folders of another
version of the record."""

import json

import pytest
import torch

import deepcache_ref
from deepcache_ref import FastPath, build_model, check_sampling, load_config
from deepcache_ref.errors import UserError
from deepcache_ref.runs.record import SETTINGS, check_settings, record_settings, run_settings


def _settings(cfg):
    model = build_model(cfg, "meta")
    timesteps, full = check_sampling(model, cfg.sampling)
    return run_settings(cfg, None, timesteps, full, FastPath(), torch.device("cpu"))


def test_a_run_records_its_own_samplers_options_only():
    ddim = _settings(load_config("digits", ["sampling.eta=0.5"]))["config"]["sampling"]
    dpm = _settings(load_config("digits", ["sampling.sampler=dpm++", "sampling.solver_order=3"]))["config"]["sampling"]
    assert ddim["eta"] == 0.5 and "solver_order" not in ddim
    assert dpm["solver_order"] == 3 and "eta" not in dpm
    assert _settings(load_config("digits"))["code_version"] == deepcache_ref.__version__


def test_a_folder_of_another_record_version_refuses_and_says_why(tmp_path):
    settings = _settings(load_config("digits"))
    record_settings(tmp_path, settings)
    check_settings(tmp_path, settings)  # the same settings continue
    old = json.loads((tmp_path / SETTINGS).read_text())
    old["settings"]["code_version"] = "0.2.0"
    (tmp_path / SETTINGS).write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"made by deepcache_ref 0\.2\.0, whose settings record differs"):
        check_settings(tmp_path, settings)

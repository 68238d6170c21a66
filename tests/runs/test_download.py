"""The downloader against a misbehaving server on 127.0.0.1: checked files land, bad ones leave
nothing, interrupted transfers resume only from a `.part` of the same source, every answer is checked
before its bytes are kept. (The script's refusals are rows of tests/scripts/test_bad_inputs.py.)"""

import fcntl
import hashlib
import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import SCRIPTS
from deepcache_ref.runs.download import Remote, content_problem, fetch, remotes
from local_server import local_server

DATA = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(DATA).hexdigest()


@pytest.fixture
def server():
    with local_server() as s:
        s.files["/model.ckpt"] = DATA
        yield s


def remote(s, tmp_path, path="/model.ckpt", **checks):
    return Remote.one(s.url + path, tmp_path / path.lstrip("/"), **({"md5": MD5} if not checks else checks))


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def part_of(s, path, tmp_path, data, url=None, **record):
    """A `.part` holding `data`, recorded as coming from `url` (default: the server's file)."""
    dest = tmp_path / path.lstrip("/")
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps(
        {"url": url or s.url + path, "length": len(s.files.get(path, DATA)), **record}))
    return dest


def test_a_good_file_lands_with_its_checksum_verified(tmp_path, server):
    r = Remote.one(f"{server.url}/model.ckpt", tmp_path / "a" / "model.ckpt", md5=MD5, size=len(DATA))
    assert fetch(r, progress=False).read_bytes() == DATA
    assert names(tmp_path / "a") == ["model.ckpt"]


def test_a_bad_checksum_leaves_nothing_at_the_target(tmp_path, server):
    with pytest.raises(ValueError, match="does not match.*md5.*deleted"):
        fetch(remote(server, tmp_path, md5="0" * 32), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_an_interrupted_transfer_leaves_no_final_file_and_a_rerun_completes_it(tmp_path, server, ranges):
    server.quirks["/model.ckpt"] = {"cut": 300_000, "ranges": ranges}
    r = remote(server, tmp_path)
    with pytest.raises(ValueError, match="stopped at 300,000 of 1,048,576 bytes.*rerun to resume"):
        fetch(r, progress=False)
    assert names(tmp_path) == ["model.ckpt.part", "model.ckpt.part.json"]
    assert fetch(r, progress=False).read_bytes() == DATA
    assert names(tmp_path) == ["model.ckpt"]
    assert server.requests[-1][1] == "bytes=300000-"  # asked for the rest either way


@pytest.mark.parametrize("record", [{"url": "http://elsewhere.example/model.ckpt"}, None],
                         ids=["another-source", "no-record"])
def test_a_part_of_another_source_is_discarded_not_resumed(tmp_path, server, record):
    dest = part_of(server, "/model.ckpt", tmp_path, b"\xff" * 1000, **(record or {}))
    if record is None:
        dest.with_name("model.ckpt.part.json").unlink()
    assert fetch(remote(server, tmp_path), progress=False).read_bytes() == DATA
    assert server.requests == [("/model.ckpt", None, None)]  # asked from zero
    assert names(tmp_path) == ["model.ckpt"]


def test_a_resume_sends_the_recorded_validator_and_a_changed_file_is_not_spliced(tmp_path, server):
    part_of(server, "/model.ckpt", tmp_path, DATA[:1000], etag='"v1"')
    server.quirks["/model.ckpt"] = {"etag": '"v2"'}  # the server ignores If-Range but tells the new ETag
    with pytest.raises(ValueError, match="not the continuation of model.ckpt.part"):
        fetch(remote(server, tmp_path), progress=False)
    assert server.requests == [("/model.ckpt", "bytes=1000-", '"v1"')]
    assert list(tmp_path.iterdir()) == []  # the stale part is gone: the rerun starts from zero
    server.quirks.clear()
    assert fetch(remote(server, tmp_path), progress=False).read_bytes() == DATA


@pytest.mark.parametrize("content_range", ["bytes 0-1048575/1048576", "bytes 1000-1999/1048576",
                                           "bytes 1000-1048575/2000000", "bytes */1048576"])
def test_a_206_that_does_not_continue_the_part_is_refused(tmp_path, server, content_range):
    part_of(server, "/model.ckpt", tmp_path, DATA[:1000])
    server.quirks["/model.ckpt"] = {"range": content_range, "body": DATA[1000:]}
    with pytest.raises(ValueError, match="answered .*not"):
        fetch(remote(server, tmp_path), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_416_starts_over_instead_of_keeping_the_part(tmp_path, server):
    server.files["/model.ckpt"] = DATA[:1000]  # the file shrank since the part was fetched
    part_of(server, "/model.ckpt", tmp_path, DATA[:1500])
    (tmp_path / "model.ckpt.part.json").write_text(json.dumps({"url": server.url + "/model.ckpt", "length": 2000}))
    r = remote(server, tmp_path, md5=hashlib.md5(DATA[:1000]).hexdigest())
    assert fetch(r, progress=False).read_bytes() == DATA[:1000]
    assert [q[1] for q in server.requests] == ["bytes=1500-", None]


def test_a_length_short_of_the_catalogued_size_is_refused_before_any_byte(tmp_path, server):
    server.quirks["/model.ckpt"] = {"length": 1000, "body": DATA[:1000]}
    with pytest.raises(ValueError, match="serves 1,000 bytes, expected 1,048,576"):
        fetch(remote(server, tmp_path, size=len(DATA)), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_body_longer_than_announced_is_cut_to_the_announcement_and_checked(tmp_path, server):
    server.files["/config.json"] = b'{"a": 1}'
    server.quirks["/config.json"] = {"length": 5}
    with pytest.raises(ValueError, match="not JSON"):
        fetch(Remote.one(server.url + "/config.json", tmp_path / "config.json"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_hang_times_out_and_leaves_nothing(tmp_path, server):
    server.quirks["/model.ckpt"] = {"delay": 3}
    start = time.monotonic()
    with pytest.raises(ValueError, match="timed out"):
        fetch(remote(server, tmp_path), progress=False, timeout=0.5)
    assert time.monotonic() - start < 3 and list(tmp_path.iterdir()) == []


def test_redirects_are_followed_and_a_loop_is_an_error(tmp_path, server):
    server.quirks["/moved.ckpt"] = {"redirect": "/model.ckpt"}
    target = tmp_path / "model.ckpt"
    assert fetch(Remote.one(server.url + "/moved.ckpt", target, md5=MD5), progress=False).read_bytes() == DATA
    server.quirks["/loop.ckpt"] = {"redirect": "/loop.ckpt"}
    with pytest.raises(ValueError, match="HTTP 302"):
        fetch(Remote.one(server.url + "/loop.ckpt", tmp_path / "loop.ckpt", md5=MD5), progress=False)
    assert names(tmp_path) == ["model.ckpt"]


def test_a_second_process_on_the_same_file_is_refused(tmp_path, server):
    with open(tmp_path / "model.ckpt.part", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another process is downloading"):
            fetch(remote(server, tmp_path), progress=False)
    assert server.requests == []


def safetensors(tensors, tamper=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if tamper:
        tamper(header)
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def pickled(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_what_a_file_without_checksum_must_be(tmp_path):
    def problem(name, data):
        (p := tmp_path / name).write_bytes(data)
        return content_problem(p)

    weights = {"w": torch.ones(2, 3), "b": torch.zeros(4)}
    assert problem("a.safetensors", safetensors(weights)) is None
    assert problem("a.bin", pickled(weights)) is None
    assert problem("config.json", b'{"x": 1}') is None
    assert "not JSON" in problem("config.json", b'{"x": ')
    assert "object" in problem("config.json", b"[1, 2]")
    assert "tensors need" in problem("b.safetensors", safetensors(weights)[:-4])
    assert "do not hold" in problem("c.safetensors", safetensors(
        weights, lambda h: h["w"].update(shape=[3, 3])))
    assert "claims" in problem("d.safetensors", (10 ** 9).to_bytes(8, "little") + b"{}")
    assert "holds a int" in problem("e.bin", pickled(42))
    assert "not a readable" in problem("f.bin", b"plain text")
    assert "cannot be checked" in problem("g.tar", b"x")


@pytest.mark.slow
def test_the_script_fetches_a_config_from_a_mirror_and_a_repo_falls_back_to_bin(tmp_path, server):
    server.files.update({"/repo/config.json": b"{}", "/repo/scheduler_config.json": b"{}",
                         "/repo/diffusion_pytorch_model.bin": pickled({"w": torch.ones(2)})})
    script = [sys.executable, str(SCRIPTS / "download.py"), "--root", str(tmp_path)]
    bad = subprocess.run(script + ["lsun_church", "--url", f"{server.url}/model.ckpt"], capture_output=True, text=True)
    assert bad.returncode == 2 and "md5" in bad.stderr and "Traceback" not in bad.stderr
    assert not list(tmp_path.rglob("*.ckpt*"))
    ok = subprocess.run(script + ["google/ddpm-cifar10-32", "--url", f"{server.url}/repo"], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    folder = tmp_path / "google/ddpm-cifar10-32"
    assert names(folder) == ["config.json", "diffusion_pytorch_model.bin", "scheduler_config.json"]


def test_every_name_has_a_source_and_a_check():
    for name in ("cifar10", "lsun_church", "lsun_bedroom", "cin256-v2"):
        (r,) = remotes(name)
        assert r.md5 or r.size, name
    assert remotes("inception")[0].sha256_prefix == "6726825d"
    with pytest.raises(ValueError, match="no direct download"):
        remotes("celeba")


def test_a_part_made_final_by_another_process_while_waiting_for_its_lock_is_not_rewritten(tmp_path, server,
                                                                                           monkeypatch):
    import deepcache_ref.runs.download as download

    r = remote(server, tmp_path)
    (tmp_path / "model.ckpt.part").write_bytes(DATA)
    real_flock = download.fcntl.flock

    def other_process_finishes_first(fd, op):  # it renames the part to its final name, then releases the lock
        os.replace(tmp_path / "model.ckpt.part", tmp_path / "model.ckpt")
        return real_flock(fd, op)

    monkeypatch.setattr(download.fcntl, "flock", other_process_finishes_first)
    with pytest.raises(ValueError, match="another process has just downloaded"):
        fetch(r, progress=False)
    assert (tmp_path / "model.ckpt").read_bytes() == DATA and server.requests == []

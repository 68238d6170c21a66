"""scripts/download.py against a server on 127.0.0.1: checked files land, bad ones leave nothing,
interrupted transfers resume."""

import hashlib
import http.server
import subprocess
import sys
import threading

import pytest

from conftest import SCRIPTS
from deepcache_ref.runs.download import Remote, fetch, remotes

DATA = bytes(range(256)) * 4096  # 1 MiB


class Server(http.server.ThreadingHTTPServer):
    files = {}
    cut_after = None  # bytes sent before the next response is broken off (once)
    ranges = True


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        asked = self.headers.get("Range")
        if asked and self.server.ranges:
            start = int(asked.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    s = Server(("127.0.0.1", 0), Handler)
    s.files = {"/model.ckpt": DATA}
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s, f"http://127.0.0.1:{s.server_address[1]}"
    s.shutdown()


def test_a_good_file_lands_with_its_checksum_verified(tmp_path, server):
    _, url = server
    remote = Remote.one(f"{url}/model.ckpt", tmp_path / "a" / "model.ckpt", md5=hashlib.md5(DATA).hexdigest(),
                        size=len(DATA))
    assert fetch(remote, progress=False).read_bytes() == DATA
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.ckpt"]


def test_a_bad_checksum_leaves_nothing_at_the_target(tmp_path, server):
    _, url = server
    target = tmp_path / "model.ckpt"
    with pytest.raises(ValueError, match="does not match.*md5.*deleted"):
        fetch(Remote.one(f"{url}/model.ckpt", target, md5="0" * 32), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_an_interrupted_transfer_leaves_no_final_file_and_a_rerun_completes_it(tmp_path, server, ranges):
    s, url = server
    s.cut_after, s.ranges = 300_000, ranges
    target = tmp_path / "model.ckpt"
    remote = Remote.one(f"{url}/model.ckpt", target, md5=hashlib.md5(DATA).hexdigest())
    with pytest.raises(ValueError, match="stopped at 300,000 of 1,048,576 bytes.*rerun to resume"):
        fetch(remote, progress=False)
    assert not target.exists() and (tmp_path / "model.ckpt.part").stat().st_size == 300_000
    assert fetch(remote, progress=False).read_bytes() == DATA
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_the_script_fetches_a_config_from_a_mirror_and_a_repo_falls_back_to_bin(tmp_path, server):
    s, url = server
    s.files.update({"/repo/config.json": b"{}", "/repo/scheduler_config.json": b"{}",
                    "/repo/diffusion_pytorch_model.bin": b"weights"})
    script = [sys.executable, str(SCRIPTS / "download.py"), "--root", str(tmp_path)]
    bad = subprocess.run(script + ["lsun_church", "--url", f"{url}/model.ckpt"], capture_output=True, text=True)
    assert bad.returncode == 2 and "md5" in bad.stderr and "Traceback" not in bad.stderr  # not the real checkpoint
    assert not list(tmp_path.rglob("*.ckpt*"))
    ok = subprocess.run(script + ["google/ddpm-cifar10-32", "--url", f"{url}/repo"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    folder = tmp_path / "google/ddpm-cifar10-32"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.bin",
                                                        "scheduler_config.json"]


def test_every_name_has_a_source_and_a_check():
    for name in ("cifar10", "lsun_church", "lsun_bedroom", "cin256-v2"):
        (remote,) = remotes(name)
        assert remote.md5 or remote.size, name
    assert remotes("inception")[0].sha256_prefix == "6726825d"
    with pytest.raises(ValueError, match="no direct download"):
        remotes("celeba")

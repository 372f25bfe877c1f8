"""taseg_ros.weights and `taseg weights`: registry, checks, and downloads from a loopback HTTP server.

Every download here goes to an http.server on 127.0.0.1 (or a file:// folder); a guard fails
any test that opens a socket to anywhere else, so the suite never touches the internet.
"""
from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taseg_ros import weights
from taseg_ros.model.config import MODEL_CONFIGS, get_config
from taseg_ros.weights import Status, WeightChecksumError, WeightDownloadError, WeightFile

SIZE = 2_621_447  # a few network chunks, deliberately not a multiple of any buffer size


def _payload(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; supports `Range: bytes=N-[M]` unless server.honour_range is False."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        data = server.files.get(self.path)
        range_header = self.headers.get("Range")
        if data is None:
            server.log.append((self.path, range_header, 404))
            self.send_error(404)
            return
        start, end, status = 0, len(data) - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if match and server.honour_range:
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
            if start >= len(data):
                server.log.append((self.path, range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        server.log.append((self.path, range_header, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if server.honour_range else "none")
        self.end_headers()
        if server.cut_after is not None:  # a dropped connection: promise everything, send less
            body = body[: server.cut_after]
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No test may reach beyond this machine, and no proxy may redirect loopback requests."""
    real_create_connection = socket.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"test tried to connect to {address}: tests must stay on loopback")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                weights.MIRROR_ENV, "TASEG_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    httpd.log = []  # (path, Range header, status) per request
    httpd.honour_range = True
    httpd.cut_after = None
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _serve(server, name: str, data: bytes, prefix: str = "/files") -> WeightFile:
    server.files[f"{prefix}/{name}"] = data
    return WeightFile(
        name=name, url=f"{server.base}/files/{name}", size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), description="test payload", licence="test",
    )


# --- registry ---------------------------------------------------------------------------------


def test_registry_entries_are_well_formed():
    assert {"sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth", "ViT-L-14.pt"} <= set(weights.REGISTRY)
    for name, wf in weights.REGISTRY.items():
        assert wf.name == name
        assert wf.url.startswith("https://") and wf.url.endswith("/" + name)
        assert re.fullmatch(r"[0-9a-f]{64}", wf.sha256), name
        assert wf.size_bytes > 100_000_000, name
    for name in ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"):
        assert weights.REGISTRY[name].url == "https://dl.fbaipublicfiles.com/segment_anything/" + name
    clip = weights.REGISTRY["ViT-L-14.pt"]
    assert clip.sha256 in clip.url  # OpenAI's URLs carry the file's sha256, which clip.py verifies


def test_required_files_per_config():
    assert weights.required_files(get_config("tiny")) == []
    vit_b = get_config("vit_b")
    assert [wf.name for wf in weights.required_files(vit_b)] == ["sam_vit_b_01ec64.pth", vit_b.clip_weights]
    assert [wf.name for wf in weights.required_files(vit_b, "inference")] == ["sam_vit_b_01ec64.pth"]
    assert [wf.name for wf in weights.required_files(vit_b.replace(text=False))] == ["sam_vit_b_01ec64.pth"]
    assert [wf.name for wf in weights.required_files(get_config("vit_h"), "inference")] == ["sam_vit_h_4b8939.pth"]
    with pytest.raises(ValueError, match="purpose"):
        weights.required_files(vit_b, "deploy")


def test_every_file_a_config_names_is_registered():
    """A config naming a file the registry lacks would leave `taseg weights --download` without a source."""
    for name, cfg in MODEL_CONFIGS.items():
        for wf in weights.required_files(cfg):
            assert wf.name in weights.REGISTRY, f"config {name} needs {wf.name}, which is not in weights.REGISTRY"


def test_unregistered_file_from_a_yaml_config_is_listed_without_source(tmp_path):
    yaml_cfg = tmp_path / "custom.yaml"
    yaml_cfg.write_text("base: vit_l\nclip_weights: my_clip.safetensors\n")
    files = weights.required_files(get_config(yaml_cfg))
    assert [wf.name for wf in files] == ["sam_vit_l_0b3195.pth", "my_clip.safetensors"]
    custom = files[1]
    assert custom.url is None and custom.sha256 is None and custom.size_bytes is None
    with pytest.raises(WeightDownloadError, match="my_clip.safetensors: no download source"):
        weights.download(custom, tmp_path)


# --- hashing and checking ---------------------------------------------------------------------


def test_sha256_file_matches_hashlib_across_buffer_boundaries(tmp_path, monkeypatch):
    data = _payload(1)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert weights.sha256_file(path) == hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(weights, "_HASH_BUFFER", 4093)  # many partial reads
    assert weights.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert weights.sha256_file(tmp_path / "blob.bin", progress=False) == hashlib.sha256(data).hexdigest()


def test_check_reports_each_state(tmp_path):
    data = _payload(2)
    wf = WeightFile("w.bin", None, len(data), hashlib.sha256(data).hexdigest(), "", "")
    path = tmp_path / "w.bin"

    assert weights.check(path, wf).status is Status.MISSING

    weights.part_path(path).write_bytes(data[:1000])
    partial = weights.check(path, wf)
    assert partial.status is Status.PARTIAL and partial.size_bytes == 1000
    assert "1000 of" in partial.describe(wf)
    weights.part_path(path).unlink()

    path.write_bytes(data[:-1])
    short = weights.check(path, wf)
    assert short.status is Status.SIZE_MISMATCH and short.size_bytes == len(data) - 1
    assert f"expected {len(data)}" in short.describe(wf)

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    bad = weights.check(path, wf)
    assert bad.status is Status.SHA_MISMATCH
    assert bad.sha256 == hashlib.sha256(flipped).hexdigest()
    assert wf.sha256 in bad.describe(wf) and bad.sha256 in bad.describe(wf)
    assert weights.check(path, wf, verify_sha=False).status is Status.OK  # size-only by request

    path.write_bytes(data)
    good = weights.check(path, wf)
    assert good.status is Status.OK and good.sha256 == wf.sha256

    unknown = WeightFile("w.bin", None, None, None, "", "")
    assert weights.check(path, unknown).status is Status.UNVERIFIED


# --- downloads --------------------------------------------------------------------------------


def test_download_verifies_and_renames(server, tmp_path):
    data = _payload(3)
    wf = _serve(server, "sam_test.pth", data)
    path = weights.download(wf, tmp_path / "models", progress=False)
    assert path == tmp_path / "models" / "sam_test.pth"
    assert path.read_bytes() == data
    assert not weights.part_path(path).exists()
    assert server.log == [("/files/sam_test.pth", None, 200)]
    assert weights.check(path, wf).status is Status.OK

    weights.download(wf, tmp_path / "models", progress=False)  # already there and intact
    assert len(server.log) == 1


def test_interrupted_download_keeps_part_and_resumes_with_range(server, tmp_path):
    data = _payload(4)
    wf = _serve(server, "big.pth", data)
    server.cut_after = 1_000_000
    with pytest.raises(WeightDownloadError, match="run the same command again to resume"):
        weights.download(wf, tmp_path, progress=False)
    part = weights.part_path(tmp_path / "big.pth")
    assert part.stat().st_size == 1_000_000
    assert not (tmp_path / "big.pth").exists()
    assert weights.check(tmp_path / "big.pth", wf).status is Status.PARTIAL

    server.cut_after = None
    path = weights.download(wf, tmp_path, progress=False)
    assert server.log[-1] == ("/files/big.pth", "bytes=1000000-", 206)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == wf.sha256
    assert not part.exists()


def test_resume_from_an_existing_part_file(server, tmp_path):
    data = _payload(5)
    wf = _serve(server, "resume.pth", data)
    weights.part_path(tmp_path / "resume.pth").write_bytes(data[:777_777])
    path = weights.download(wf, tmp_path, progress=False)
    assert server.log == [("/files/resume.pth", "bytes=777777-", 206)]
    assert path.read_bytes() == data


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    data = _payload(6)
    wf = _serve(server, "norange.pth", data)
    server.honour_range = False
    weights.part_path(tmp_path / "norange.pth").write_bytes(data[: SIZE // 2])
    path = weights.download(wf, tmp_path, progress=False)
    assert server.log == [("/files/norange.pth", f"bytes={SIZE // 2}-", 200)]
    assert path.stat().st_size == SIZE  # not the half prefix plus the whole file
    assert path.read_bytes() == data


def test_part_longer_than_the_remote_file_restarts_after_416(server, tmp_path):
    data = _payload(7)
    wf = _serve(server, "shrunk.pth", data)
    unsized = WeightFile(wf.name, wf.url, None, wf.sha256, "", "")  # size unknown: cannot tell locally
    weights.part_path(tmp_path / "shrunk.pth").write_bytes(b"x" * (SIZE + 5))
    path = weights.download(unsized, tmp_path, progress=False)
    assert [entry[2] for entry in server.log] == [416, 200]
    assert path.read_bytes() == data


def test_checksum_mismatch_names_file_and_hashes_and_leaves_nothing(server, tmp_path):
    data = _payload(8)
    wf = _serve(server, "tampered.pth", data)
    wrong = "0" * 64
    wf = WeightFile(wf.name, wf.url, wf.size_bytes, wrong, "", "")
    with pytest.raises(WeightChecksumError) as info:
        weights.download(wf, tmp_path, progress=False)
    message = str(info.value)
    assert "tampered.pth" in message and wrong in message and hashlib.sha256(data).hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part that a resume would trust


def test_corrupt_part_is_caught_by_the_checksum_and_a_retry_succeeds(server, tmp_path):
    data = _payload(9)
    wf = _serve(server, "corrupt_part.pth", data)
    weights.part_path(tmp_path / "corrupt_part.pth").write_bytes(b"\0" * 4096)  # not a prefix of data
    with pytest.raises(WeightChecksumError, match="corrupt_part.pth"):
        weights.download(wf, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert weights.download(wf, tmp_path, progress=False).read_bytes() == data


def test_server_offering_the_wrong_size_is_rejected_before_writing(server, tmp_path):
    data = _payload(10)
    wf = _serve(server, "wrong_size.pth", data)
    wf = WeightFile(wf.name, wf.url, len(data) + 10, wf.sha256, "", "")
    with pytest.raises(WeightChecksumError, match=f"offers {len(data)} bytes, expected {len(data) + 10}"):
        weights.download(wf, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_reported_with_the_url(server, tmp_path):
    wf = WeightFile("absent.pth", f"{server.base}/files/absent.pth", 10, "0" * 64, "", "")
    with pytest.raises(WeightDownloadError, match=r"absent.pth: .*/files/absent.pth answered HTTP 404"):
        weights.download(wf, tmp_path, progress=False)


def test_bad_existing_file_is_replaced_by_a_verified_download(server, tmp_path):
    data = _payload(11)
    wf = _serve(server, "replace.pth", data)
    (tmp_path / "replace.pth").write_bytes(b"stale")
    assert weights.download(wf, tmp_path, progress=False).read_bytes() == data


def test_mirror_from_environment_replaces_the_upstream_url(server, tmp_path, monkeypatch):
    data = _payload(12)
    wf = _serve(server, "mirrored.pth", data, prefix="/mirror")
    wf = WeightFile(wf.name, "http://127.0.0.1:9/upstream/mirrored.pth", wf.size_bytes, wf.sha256, "", "")
    monkeypatch.setenv(weights.MIRROR_ENV, f"{server.base}/mirror/")
    assert weights.source_url(wf) == f"{server.base}/mirror/mirrored.pth"
    assert weights.download(wf, tmp_path, progress=False).read_bytes() == data
    assert [entry[0] for entry in server.log] == ["/mirror/mirrored.pth"]


def test_file_url_mirror_for_offline_machines(tmp_path):
    data = _payload(13)
    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / "offline.pth").write_bytes(data)
    wf = WeightFile("offline.pth", "http://127.0.0.1:9/never", len(data), hashlib.sha256(data).hexdigest(), "", "")
    models = tmp_path / "models"
    models.mkdir()
    weights.part_path(models / "offline.pth").write_bytes(data[:1234])  # file:// ignores Range: restart
    path = weights.download(wf, models, mirror=stick.as_uri(), progress=False)
    assert path.read_bytes() == data


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, server):
    """`taseg weights` through taseg_ros.cli.main, with vit_b's files served from loopback."""
    import taseg_ros.cli as cli_module

    # Only this subcommand: the suite must not depend on sibling CLI modules existing yet.
    monkeypatch.setattr(cli_module, "COMMANDS", {"weights": ".weights"})
    cfg = get_config("vit_b")
    served = {}
    for seed, name in enumerate((cfg.sam_checkpoint, cfg.clip_weights)):
        data = _payload(100 + seed, 300_000 + seed)
        served[name] = data
        monkeypatch.setitem(weights.REGISTRY, name, _serve(server, name, data))
        server.files[f"/mirror/{name}"] = data
    return cli_module.main, served


def test_cli_missing_files_exit_1_with_the_command_that_fetches_them(cli, tmp_path, capsys):
    main, served = cli
    assert main(["weights", "--config", "vit_b", "--models-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for name in served:
        assert re.search(rf"^{re.escape(name)}\s.*\smissing\s", out, re.M), out
    assert f"taseg weights --config vit_b --download --models-dir {tmp_path}" in out


def test_cli_download_then_check_is_clean(cli, server, tmp_path, capsys):
    main, served = cli
    assert main(["weights", "--config", "vit_b", "--models-dir", str(tmp_path), "--download"]) == 0
    for name, data in served.items():
        assert (tmp_path / name).read_bytes() == data
    out = capsys.readouterr().out
    assert all(re.search(rf"^{re.escape(name)}\s.*\sok\s", out, re.M) for name in served), out
    requests = len(server.log)
    assert main(["weights", "--config", "vit_b", "--models-dir", str(tmp_path)]) == 0
    assert len(server.log) == requests  # checking never touches the network


def test_cli_reports_a_corrupt_file_with_both_hashes(cli, tmp_path, capsys):
    main, served = cli
    sam = get_config("vit_b").sam_checkpoint
    corrupt = bytes(b ^ 1 for b in served[sam])
    (tmp_path / sam).write_bytes(corrupt)
    assert main(["weights", "--config", "vit_b", "--inference", "--models-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"^{re.escape(sam)}\s.*\ssha-mismatch\s", out, re.M), out
    assert hashlib.sha256(corrupt).hexdigest() in out and hashlib.sha256(served[sam]).hexdigest() in out
    assert main(["weights", "--config", "vit_b", "--inference", "--quick", "--models-dir", str(tmp_path)]) == 0
    assert "ok (size only)" in capsys.readouterr().out


def test_cli_listing_all_configs_fails_only_on_corrupt_files(cli, tmp_path, capsys):
    main, served = cli
    assert main(["weights", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth", *served):
        assert name in out
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in out
    (tmp_path / "sam_vit_l_0b3195.pth").write_bytes(b"truncated")
    assert main(["weights", "--models-dir", str(tmp_path)]) == 1
    assert "size-mismatch" in capsys.readouterr().out


def test_cli_mirror_flag_and_models_dir_env(cli, server, tmp_path, capsys, monkeypatch):
    main, served = cli
    monkeypatch.setenv("TASEG_MODELS_DIR", str(tmp_path / "env_models"))
    assert main(["weights", "--config", "vit_b", "--download", "--mirror", f"{server.base}/mirror"]) == 0
    assert sorted(p.name for p in (tmp_path / "env_models").iterdir()) == sorted(served)
    assert {entry[0] for entry in server.log} == {f"/mirror/{name}" for name in served}
    assert f"{server.base}/mirror/" in capsys.readouterr().out


def test_cli_failed_download_exits_1_and_says_why(cli, tmp_path, capsys, monkeypatch):
    main, served = cli
    sam = get_config("vit_b").sam_checkpoint
    good = weights.REGISTRY[sam]
    monkeypatch.setitem(weights.REGISTRY, sam, WeightFile(sam, good.url, good.size_bytes, "f" * 64, "", ""))
    assert main(["weights", "--config", "vit_b", "--download", "--models-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"{sam}: sha256 of the download" in captured.err and "f" * 64 in captured.err
    assert not (tmp_path / sam).exists()


def test_cli_tiny_needs_nothing_and_unknown_config_is_exit_2(cli, tmp_path, capsys):
    main, _ = cli
    assert main(["weights", "--config", "tiny", "--models-dir", str(tmp_path)]) == 0
    assert "needs no weight files" in capsys.readouterr().out
    assert main(["weights", "--config", "vit_q"]) == 2
    assert "unknown model config 'vit_q'" in capsys.readouterr().err

"""``lesion-harvest weights fetch``: verified downloads from a real local HTTP server and a
file URL, all-or-nothing, and no other code path in the package that downloads."""

from __future__ import annotations

import ast
import hashlib
import http.server
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import napari_lesion_harvest
from napari_lesion_harvest.progress import parse_progress_line
from napari_lesion_harvest.weights.fetch import (
    IMAGENET,
    KINETICS,
    WeightFile,
    WeightsFetchError,
    fetch_weights,
)


def _weight_file(stem: str, data: bytes) -> WeightFile:
    """A pinned entry for ``data``, named as torchvision names its files."""
    digest = hashlib.sha256(data).hexdigest()
    return WeightFile(f"{stem}-{digest[:8]}.pth", digest, len(data), f"{stem} test weights")


ALPHA = b"alpha weights " * 100_000  # larger than one read chunk (1 MiB)
BETA = os.urandom(3000)
ALPHA_FILE = _weight_file("alpha", ALPHA)
BETA_FILE = _weight_file("beta", BETA)


class _Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) at ``/models/NAME``; names in ``cut`` announce their
    whole length and close the connection halfway, names in ``stall`` send half and wait for
    ``release``. ``requests`` lists the paths asked for."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.stall: set[str] = set()
        self.release = threading.Event()
        self.requests: list[str] = []

    @property
    def url_base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/models/"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        server.requests.append(self.path)
        name = self.path.removeprefix("/models/")
        if name not in server.files:
            self.send_error(404, "File not found")
            return
        data = server.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if name in server.cut | server.stall:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if name in server.stall:
                server.release.wait(timeout=30)
            self.close_connection = True
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_verify_land_whole_and_a_rerun_downloads_nothing(server, tmp_path):
    server.files = {ALPHA_FILE.name: ALPHA, BETA_FILE.name: BETA}
    dest = tmp_path / "cache" / "checkpoints"
    lines = []
    events = []
    fetched = fetch_weights(
        (ALPHA_FILE, BETA_FILE),
        url_base=server.url_base,
        dest=dest,
        report=lines.append,
        progress=lambda stage, step, total, message="", metrics=None: events.append(
            (stage, step, total)
        ),
    )
    for file in (ALPHA_FILE, BETA_FILE):  # each file's bytes, from none to all, in order
        received = [step for stage, step, total in events if stage == file.name]
        assert {total for stage, step, total in events if stage == file.name} == {file.size}
        assert received[0] == 0 and received[-1] == file.size
        assert received == sorted(received)
    assert len([e for e in events if e[0] == ALPHA_FILE.name]) >= 3  # more than one chunk
    assert [(f.file, f.path, f.downloaded) for f in fetched] == [
        (ALPHA_FILE, dest / ALPHA_FILE.name, True),
        (BETA_FILE, dest / BETA_FILE.name, True),
    ]
    assert (dest / ALPHA_FILE.name).read_bytes() == ALPHA
    assert (dest / BETA_FILE.name).read_bytes() == BETA
    assert _listing(dest) == sorted([ALPHA_FILE.name, BETA_FILE.name])  # no partial file left
    assert stat.S_IMODE((dest / ALPHA_FILE.name).stat().st_mode) == 0o644
    assert lines[0] == (
        f"{ALPHA_FILE.name}: downloading {server.url_base}{ALPHA_FILE.name} (1.4 MB)"
    )
    assert f"{BETA_FILE.name}: verified (sha256 {BETA_FILE.sha256}), {dest / BETA_FILE.name}" in (
        lines
    )
    assert len(server.requests) == 2

    lines.clear()
    again = fetch_weights(
        (ALPHA_FILE, BETA_FILE), url_base=server.url_base, dest=dest, report=lines.append
    )
    assert [f.downloaded for f in again] == [False, False]
    assert len(server.requests) == 2  # nothing asked for
    assert lines == [
        f"{ALPHA_FILE.name}: already present and verified, {dest / ALPHA_FILE.name}",
        f"{BETA_FILE.name}: already present and verified, {dest / BETA_FILE.name}",
    ]


def test_a_file_url_works_as_the_url_base(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / BETA_FILE.name).write_bytes(BETA)
    fetched = fetch_weights((BETA_FILE,), url_base=source.as_uri(), dest=tmp_path / "dest")
    assert fetched[0].downloaded and fetched[0].path.read_bytes() == BETA


def test_a_wrong_hash_is_refused_and_no_file_of_the_set_is_placed(server, tmp_path):
    forged = bytes(len(BETA))  # the pinned size, other bytes
    server.files = {ALPHA_FILE.name: ALPHA, BETA_FILE.name: forged}
    dest = tmp_path / "dest"
    with pytest.raises(WeightsFetchError) as refused:
        fetch_weights((ALPHA_FILE, BETA_FILE), url_base=server.url_base, dest=dest)
    assert str(refused.value) == (
        f"{BETA_FILE.name} from {server.url_base}{BETA_FILE.name}: sha256 "
        f"{hashlib.sha256(forged).hexdigest()}, not the pinned {BETA_FILE.sha256} (a corrupt "
        f"or different file); nothing was placed in {dest}"
    )
    assert _listing(dest) == []  # alpha arrived whole, but the set is all-or-nothing


def test_a_missing_file_on_the_server_says_http_404(server, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(WeightsFetchError) as refused:
        fetch_weights((ALPHA_FILE,), url_base=server.url_base, dest=dest)
    assert str(refused.value) == (
        f"{ALPHA_FILE.name} from {server.url_base}{ALPHA_FILE.name}: HTTP 404 File not found; "
        f"nothing was placed in {dest}"
    )
    assert _listing(dest) == []


def test_an_interrupted_download_leaves_nothing(server, tmp_path):
    server.files = {ALPHA_FILE.name: ALPHA}
    server.cut = {ALPHA_FILE.name}
    dest = tmp_path / "dest"
    with pytest.raises(WeightsFetchError) as refused:
        fetch_weights((ALPHA_FILE,), url_base=server.url_base, dest=dest)
    assert "cut short" in str(refused.value)
    assert str(refused.value).startswith(f"{ALPHA_FILE.name} from {server.url_base}")
    assert _listing(dest) == []


def test_a_short_file_without_a_length_is_refused(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / ALPHA_FILE.name).write_bytes(ALPHA[:1000])
    with pytest.raises(WeightsFetchError, match=rf"1000 of {len(ALPHA)} bytes arrived"):
        fetch_weights((ALPHA_FILE,), url_base=source.as_uri(), dest=tmp_path / "dest")
    assert _listing(tmp_path / "dest") == []


def test_more_bytes_than_pinned_are_refused(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / BETA_FILE.name).write_bytes(BETA + b"appended")
    with pytest.raises(WeightsFetchError, match=rf"more than the {len(BETA)} bytes expected"):
        fetch_weights((BETA_FILE,), url_base=source.as_uri(), dest=tmp_path / "dest")
    assert _listing(tmp_path / "dest") == []


def test_a_different_file_already_there_is_refused_and_kept(server, tmp_path):
    server.files = {ALPHA_FILE.name: ALPHA}
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ALPHA_FILE.name).write_bytes(b"someone's own file")
    with pytest.raises(WeightsFetchError) as refused:
        fetch_weights((ALPHA_FILE,), url_base=server.url_base, dest=dest)
    assert str(refused.value) == (
        f"{dest / ALPHA_FILE.name} is not torchvision's {ALPHA_FILE.name} (18 bytes, not "
        f"{len(ALPHA)}); move it away and run again (nothing was downloaded)"
    )
    assert (dest / ALPHA_FILE.name).read_bytes() == b"someone's own file"
    assert server.requests == []


def test_a_pinned_name_must_carry_the_start_of_its_sha256():
    with pytest.raises(ValueError, match="does not carry the start of its sha256"):
        WeightFile("alpha-00000000.pth", ALPHA_FILE.sha256, len(ALPHA), "alpha")


def test_the_pinned_files_are_the_ones_the_networks_look_for():
    from napari_lesion_harvest.lpc.models import PRETRAINED_FILES
    from napari_lesion_harvest.lpg.model import DENSENET121_FILE

    assert [file.name for file in IMAGENET] == [DENSENET121_FILE, PRETRAINED_FILES["2d"]]
    assert [file.name for file in KINETICS] == [PRETRAINED_FILES["3d"]]


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "napari_lesion_harvest", "weights", "fetch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_the_command_reports_a_failed_download_in_one_line_and_exits_2(server, tmp_path):
    dest = tmp_path / "dest"
    done = _cli("imagenet", "--url-base", server.url_base, "--dest", str(dest))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"lesion-harvest weights: error: densenet121-a639ec97.pth from {server.url_base}"
        f"densenet121-a639ec97.pth: HTTP 404 File not found; nothing was placed in {dest}"
    ]
    assert _listing(dest) == []
    kinetics = _cli("kinetics", "--url-base", server.url_base, "--dest", str(dest))
    assert kinetics.returncode == 2
    assert f"r3d_18-b3b3357e.pth from {server.url_base}r3d_18-b3b3357e.pth: HTTP 404" in (
        kinetics.stderr
    )


def test_the_command_reports_download_progress_as_json_lines(server, tmp_path):
    """The pinned size, other bytes: every byte's progress is shown, then the refusal."""
    densenet = IMAGENET[0]
    server.files = {densenet.name: bytes(densenet.size)}
    dest = tmp_path / "dest"
    done = _cli("imagenet", "--url-base", server.url_base, "--dest", str(dest), "--progress-json")
    events = [parse_progress_line(line) for line in done.stdout.splitlines()]
    steps = [event["step"] for event in events if event is not None]
    assert {(event["stage"], event["total"]) for event in events if event is not None} == {
        (densenet.name, densenet.size)
    }
    assert steps[0] == 0 and steps[-1] == densenet.size and steps == sorted(steps)
    assert done.returncode == 2
    assert "not the pinned" in done.stderr and _listing(dest) == []


def test_ctrl_c_during_a_download_stops_it_and_leaves_nothing(server, tmp_path):
    densenet = IMAGENET[0]
    server.files = {densenet.name: bytes(densenet.size)}
    server.stall = {densenet.name}
    dest = tmp_path / "dest"
    command = [sys.executable, "-m", "napari_lesion_harvest", "weights", "fetch", "imagenet"]
    options = ["--url-base", server.url_base, "--dest", str(dest), "--progress-json"]
    fetch = subprocess.Popen(
        [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in fetch.stdout:  # bytes are arriving; the server waits after half the file
        event = parse_progress_line(line)
        if event is not None and event["step"] > 0:
            break
    assert [p.name for p in dest.iterdir()][0].endswith(".partial")
    fetch.send_signal(signal.SIGINT)
    _, stderr = fetch.communicate(timeout=60)
    assert fetch.returncode == 130
    assert stderr.splitlines()[-1] == (
        f"stopped; nothing was placed in {dest}: run the same command again"
    )
    assert _listing(dest) == []


def test_the_command_writes_into_torchs_hub_cache_by_default(tmp_path):
    torch_home = tmp_path / "torch_home"
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "densenet121-a639ec97.pth").write_bytes(b"not the weights")
    done = _cli("imagenet", env={"TORCH_HOME": str(torch_home)})  # refused before any download
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"lesion-harvest weights: error: {cache / 'densenet121-a639ec97.pth'} is not "
        "torchvision's densenet121-a639ec97.pth (15 bytes, not 32342954)"
    )
    assert _listing(cache) == ["densenet121-a639ec97.pth"]


#: Calls that download or open a URL, and modules that open connections.
_DOWNLOADERS = {"load_state_dict_from_url", "download_url_to_file", "load_url", "urlopen",
                "urlretrieve", "get_state_dict", "create_connection"}  # fmt: skip
_NETWORK_MODULES = {"requests", "http", "urllib3", "httpx", "urllib.request"}


def _downloading_code(path: Path) -> list[str]:
    """What in one source file can download: network imports, downloader calls, torchvision
    builders given ``weights=`` other than None, ``torch.hub.load``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            modules = names if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "urllib":
                modules = [f"urllib.{name}" for name in names]
            for module in modules:
                if module in _NETWORK_MODULES or module.split(".")[0] in _NETWORK_MODULES:
                    found.append(f"imports {module}")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func.split(".")[-1] in _DOWNLOADERS or func.endswith("hub.load"):
                found.append(f"calls {func}")
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "weights" and not (
                    isinstance(value, ast.Constant) and value.value is None
                ):
                    found.append(f"calls {func}(weights={ast.unparse(value)})")
    return found


def test_no_other_code_path_in_the_package_downloads():
    package = Path(napari_lesion_harvest.__file__).parent
    found = {
        path.relative_to(package).as_posix(): _downloading_code(path)
        for path in sorted(package.rglob("*.py"))
    }
    assert {where: what for where, what in found.items() if what} == {
        "weights/fetch.py": [
            "imports http.client",
            "imports urllib.request",
            "calls urllib.request.urlopen",
        ]
    }

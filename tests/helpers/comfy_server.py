"""Start the real ComfyUI server on loopback, for integration tests and benchmarks.

ComfyUI is a separate program (GPL-3.0). It is only ever run here as a server process from
its own virtual environment and driven through its public HTTP and websocket API; nothing
of it is imported, copied or shipped. Where it lives:

* the source tree: ``SANDSTORM_COMFY_DIR``, else ``../shared/peers/ComfyUI`` beside the
  repository (``comfy_dir``);
* its Python: ``SANDSTORM_COMFY_PYTHON``, else ``/tmp/comfy-venv/bin/python``, else
  ``<repo>/.comfy-venv/bin/python`` (``comfy_python``). Build that venv as
  ``../shared/peers/README.md`` says (``.ci/run`` does it in CI).

``skip_reason`` says why the server cannot be started here (None when it can), so tests skip
with a reason instead of failing on a machine without it.

``running_comfyui(models_root)`` starts one server and stops it on exit::

    with running_comfyui(models_root) as comfy:
        stats = comfy.get_json("/system_stats")

The server sees ``models_root/{checkpoints,loras,vae,controlnet,upscale_models}`` through an
``extra_model_paths`` file, and everything it writes (input, output, temp, user folders, its
database, its log) goes to a temporary base directory that is deleted afterwards: nothing is
written into the ComfyUI folder (``PYTHONDONTWRITEBYTECODE=1``, ``--base-directory``, an
empty ``--front-end-root``, no custom nodes, no API nodes).

``sd15_checkpoint(cache_dir)`` builds (once, then reuses) the random-weight full-size SD1.5
checkpoint that ComfyUI needs to recognise a model (it refuses tiny ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

#: Environment variables that override where ComfyUI and its Python are.
ENV_PYTHON = "SANDSTORM_COMFY_PYTHON"
ENV_DIR = "SANDSTORM_COMFY_DIR"
#: Where ``../shared/peers/README.md`` (and ``.ci/run``) build ComfyUI's venv.
DEFAULT_VENV_PYTHON = Path("/tmp/comfy-venv/bin/python")
#: ComfyUI's model folder kinds that ``running_comfyui`` maps into ``models_root``.
MODEL_FOLDERS = ("checkpoints", "loras", "vae", "controlnet", "upscale_models")


# -- where ComfyUI is ------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def comfy_python() -> Path | None:
    """The Python of ComfyUI's venv, or None when there is none.

    ``SANDSTORM_COMFY_PYTHON`` when set (None if that file is missing: an explicit choice is
    never silently replaced), else ``/tmp/comfy-venv/bin/python``, else
    ``<repo>/.comfy-venv/bin/python``.
    """
    explicit = os.environ.get(ENV_PYTHON)
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    for candidate in (DEFAULT_VENV_PYTHON, _venv_python(REPO_ROOT / ".comfy-venv")):
        if candidate.is_file():
            return candidate
    return None


def comfy_dir() -> Path | None:
    """ComfyUI's source folder (the one holding ``main.py``), or None when absent.

    ``SANDSTORM_COMFY_DIR`` when set, else ``../shared/peers/ComfyUI`` relative to the
    repository root.
    """
    explicit = os.environ.get(ENV_DIR)
    folder = Path(explicit).expanduser() if explicit else REPO_ROOT.parent / "shared/peers/ComfyUI"
    folder = folder.resolve()
    return folder if (folder / "main.py").is_file() else None


def skip_reason() -> str | None:
    """Why the real ComfyUI cannot be started here; None when it can."""
    if comfy_dir() is None:
        where = os.environ.get(ENV_DIR) or str(REPO_ROOT.parent / "shared/peers/ComfyUI")
        return f"ComfyUI source folder not found ({where}; set {ENV_DIR})"
    if comfy_python() is None:
        where = os.environ.get(ENV_PYTHON) or (
            f"{DEFAULT_VENV_PYTHON} or {_venv_python(REPO_ROOT / '.comfy-venv')}"
        )
        return (
            f"ComfyUI's venv not found ({where}; build it as ../shared/peers/README.md says "
            f"or set {ENV_PYTHON})"
        )
    return None


def comfyui_version(folder: Path) -> str | None:
    """``__version__`` from ``comfyui_version.py``, read as text (never imported)."""
    import re

    try:
        text = (Path(folder) / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else None


# -- small HTTP helpers ----------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the server binds it soon after)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict | None, timeout: float = 30.0) -> Any:
    """POST ``body`` as JSON; the decoded reply (None for an empty one).

    An HTTP error becomes a RuntimeError carrying the server's reply (ComfyUI puts its
    ``node_errors`` there).
    """
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:4000]
        raise RuntimeError(f"ComfyUI answered {exc.code} to POST {url}: {detail}") from exc
    return json.loads(raw) if raw.strip() else None


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# -- one server process ----------------------------------------------------------------------


@dataclass
class ComfyProcess:
    """A started ComfyUI server: its address, process and log.

    ``startup_s``: process start to ``/system_stats`` answering (set by ``wait_ready``).
    """

    proc: subprocess.Popen
    port: int
    log_path: Path
    base_dir: Path
    host: str = HOST
    startup_s: float | None = None
    _started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output (stdout and stderr together)."""
        return _tail(self.log_path, lines)

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        return get_json(self.url + path, timeout)

    def post_json(self, path: str, body: dict | None, timeout: float = 30.0) -> Any:
        return post_json(self.url + path, body, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Poll ``/system_stats`` until it answers; the start-up time in seconds.

        RuntimeError (with the end of the log) when the process exits or ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with code {self.proc.returncode} while starting:\n"
                    f"{self.log_tail()}"
                )
            try:
                get_json(self.url + "/system_stats", timeout=2.0)
            except (OSError, ValueError):
                pass
            else:
                self.startup_s = time.perf_counter() - self._started
                return self.startup_s
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (its whole process group on POSIX), kill it if it lingers.

        Safe to call more than once.
        """
        stop_process(self.proc, timeout)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group that ``proc`` leads (POSIX), else to ``proc``."""
    if sys.platform != "win32":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the group of our own child (start_new_session)
            return
    with contextlib.suppress(ProcessLookupError):
        if sig == getattr(signal, "SIGKILL", None):
            proc.kill()
        else:
            proc.terminate()


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate a server started by ``start_comfyui``; kill what does not stop in time.

    The server runs in its own session (``start_new_session``), so while it is alive (not
    yet reaped, so its group id is still ours) the signals go to its whole process group;
    children it started that outlive it are then killed by pid (psutil checks the pid was
    not reused).
    """
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # psutil missing or the process already gone
        children = []
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            proc.wait(timeout)
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()


def write_extra_model_paths(path: Path, models_root: Path) -> Path:
    """ComfyUI's ``extra_model_paths`` file mapping ``MODEL_FOLDERS`` into ``models_root``.

    The subfolders are created. Written as JSON, which is valid YAML: no quoting questions
    for odd paths.
    """
    models_root = Path(models_root).resolve()
    for kind in MODEL_FOLDERS:
        (models_root / kind).mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"base_path": str(models_root)}
    entry.update({kind: kind for kind in MODEL_FOLDERS})
    path.write_text(json.dumps({"sandstorm_tests": entry}, indent=2), encoding="utf-8")
    return path


def comfy_command(
    python: Path,
    folder: Path,
    base_dir: Path,
    extra_model_paths: Path,
    port: int,
    *,
    preview_method: str = "latent2rgb",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that starts ComfyUI with everything it writes under ``base_dir``.

    ``base_dir`` must hold the folders ``input``, ``output``, ``temp``, ``user`` and
    ``frontend`` (an empty web root, so the front-end package is never looked for).
    """
    return [
        str(python),
        str(Path(folder) / "main.py"),
        "--cpu",
        "--listen",
        HOST,
        "--port",
        str(port),
        "--disable-auto-launch",
        "--disable-api-nodes",
        "--disable-all-custom-nodes",
        "--front-end-root",
        str(base_dir / "frontend"),
        "--preview-method",
        preview_method,
        "--extra-model-paths-config",
        str(extra_model_paths),
        "--base-directory",
        str(base_dir),
        "--input-directory",
        str(base_dir / "input"),
        "--output-directory",
        str(base_dir / "output"),
        "--temp-directory",
        str(base_dir / "temp"),
        "--user-directory",
        str(base_dir / "user"),
        "--database-url",
        f"sqlite:///{(base_dir / 'user' / 'comfyui.db').as_posix()}",
        *extra_args,
    ]


def start_comfyui(
    models_root: Path,
    base_dir: Path,
    *,
    port: int = 0,
    preview_method: str = "latent2rgb",
    extra_args: Sequence[str] = (),
    python: Path | None = None,
    folder: Path | None = None,
) -> ComfyProcess:
    """Start ComfyUI (not waiting for it) with ``base_dir`` as its writable folder.

    Prefer ``running_comfyui``, which waits until it answers and cleans up. ``python`` and
    ``folder`` default to ``comfy_python()`` and ``comfy_dir()``; RuntimeError with
    ``skip_reason()`` when either is missing.
    """
    python = python or comfy_python()
    folder = folder or comfy_dir()
    if python is None or folder is None:
        raise RuntimeError(skip_reason() or "ComfyUI is not available")
    base_dir = Path(base_dir)
    for sub in ("custom_nodes", "input", "output", "temp", "user", "frontend", "models"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    extra = write_extra_model_paths(base_dir / "extra_model_paths.yaml", models_root)
    port = port or free_port()
    command = comfy_command(
        python,
        folder,
        base_dir,
        extra,
        port,
        preview_method=preview_method,
        extra_args=extra_args,
    )
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the ComfyUI folder
        "PYTHONUNBUFFERED": "1",  # the log is readable while it runs
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PYTHONPATH", None)  # our packages must not leak into its interpreter
    log_path = base_dir / "server.log"
    popen_extra: dict[str, Any] = (
        {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        if sys.platform == "win32"
        else {"start_new_session": True}
    )
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            **popen_extra,
        )
    return ComfyProcess(proc=proc, port=port, log_path=log_path, base_dir=base_dir)


@contextlib.contextmanager
def running_comfyui(
    models_root: Path,
    *,
    port: int = 0,
    preview_method: str = "latent2rgb",
    extra_args: Sequence[str] = (),
    startup_timeout: float = 180,
    python: Path | None = None,
    folder: Path | None = None,
) -> Iterator[ComfyProcess]:
    """Run the real ComfyUI on ``127.0.0.1`` while the block runs.

    ``models_root``: its ``checkpoints``, ``loras``, ``vae``, ``controlnet`` and
    ``upscale_models`` subfolders (created when missing) are what the server lists.
    ``port`` 0 picks a free one. ``preview_method``: ComfyUI's ``--preview-method``
    (``none``, ``auto``, ``latent2rgb``, ``taesd``). ``extra_args`` are appended to the
    command line. Yields once ``/system_stats`` answers; on exit the server is stopped
    (terminate, then kill) and its temporary base directory removed.
    """
    base_dir = Path(tempfile.mkdtemp(prefix="sandstorm-comfyui-"))
    comfy: ComfyProcess | None = None
    try:
        comfy = start_comfyui(
            models_root,
            base_dir,
            port=port,
            preview_method=preview_method,
            extra_args=extra_args,
            python=python,
            folder=folder,
        )
        comfy.wait_ready(startup_timeout)
        yield comfy
    finally:
        if comfy is not None:
            comfy.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


# -- the test checkpoint ---------------------------------------------------------------------


def _checkpoint_key(seed: int) -> str:
    """Changes whenever the file ``build_sd15_checkpoint`` writes would change."""
    from bench import ldm_checkpoint

    digest = hashlib.sha256(f"seed={seed}\n".encode())
    sources = [Path(ldm_checkpoint.__file__), REPO_ROOT / "tests/helpers/ldm.py"]
    sources += sorted(p for p in ldm_checkpoint.SD15_CONFIG.rglob("*.json") if p.is_file())
    for source in sources:
        digest.update(source.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


#: Where the tests keep the checkpoint between sessions (overrides the default below).
ENV_CACHE = "SANDSTORM_TEST_CACHE"


def default_cache_dir() -> Path:
    """``SANDSTORM_TEST_CACHE``, else ``$XDG_CACHE_HOME/sandstorm-tests`` (``~/.cache``)."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sandstorm-tests"


def sd15_checkpoint(cache_dir: Path, seed: int = 0) -> Path:
    """The random-weight full-size SD1.5 checkpoint (fp16, about 1.1 GB), built once.

    Cached in ``cache_dir`` under a key made of the seed, the builder's code and the SD1.5
    configs, so a second run (or session) reuses the file and a change to any of those
    builds a new one (older keys are removed). Wraps
    ``bench.ldm_checkpoint.build_sd15_checkpoint``.
    """
    from bench.ldm_checkpoint import build_sd15_checkpoint

    cache_dir = Path(cache_dir)
    key = _checkpoint_key(seed)
    path = cache_dir / f"sd15-random-{key}.safetensors"
    if not path.is_file():
        for old in cache_dir.glob("sd15-random-*.safetensors"):
            old.unlink(missing_ok=True)
    return build_sd15_checkpoint(path, seed=seed)


def link_into(source: Path, folder: Path, name: str | None = None) -> Path:
    """Make ``source`` appear in ``folder`` (hard link, else symlink, else a copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        try:
            target.symlink_to(Path(source).resolve())
        except OSError:
            shutil.copy2(source, target)
    return target

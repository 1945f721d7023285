"""A setting is declared in one place: adding one there reaches every consumer.

The test copies the ``desktop`` package, adds one field to ``GenerationRequest`` in the copy's
``engine/request.py`` (and edits nothing else), and runs a script in a fresh interpreter that
checks the new setting round-trips through the infotext writer and reader, the gallery
index, the sampler panel, the remembered settings, ``sandstorm info`` and the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from desktop.engine import paths

NEW_SETTING = """\
    ensd: int = setting(
        0,
        label="Eta noise seed delta",
        help="Added to the seed of the ancestral samplers' noise",
        infotext="ENSD",
        infotext_default=0,
        minimum=0,
        maximum=2**31 - 1,
        panel="sampler",
        index=True,
    )
"""

CHECKS = r"""
import argparse, io, json, contextlib, sys
from pathlib import Path
from PIL import Image

import desktop
assert Path(desktop.__file__).resolve().parent == Path.cwd() / "desktop", desktop.__file__

from desktop.engine.request import GenerationRequest, request_field
from desktop.engine.metadata import format_parameters, read_metadata, png_info

info = request_field("ensd")
request = GenerationRequest(prompt="a fox", seed=7, ensd=3)
report = {}

# 1. Infotext: written under its key, read back by the A1111 reader.
text = format_parameters(request)
report["infotext_written"] = "ENSD: 3" in text
image = Image.new("RGB", (8, 8))
buffer = io.BytesIO()
pnginfo = png_info(request)
image.save(buffer, "PNG", pnginfo=pnginfo)
from desktop.engine.metadata import metadata_from_chunks
meta = metadata_from_chunks({"parameters": text})
report["infotext_read"] = meta.request is not None and meta.request.ensd == 3
report["chunk_read"] = read_metadata(buffer.getvalue()).request.ensd == 3

# 2. Gallery index: a column, searchable, read back on the item.
from desktop.engine.gallery import Gallery
out = Path(sys.argv[1])
with Gallery(root=out / "pictures", index_path=out / "index.sqlite3") as gallery:
    saved = gallery.save(image, request, None)
    columns = [row[1] for row in gallery._conn.execute("PRAGMA table_info(images)")]
    found = gallery.search()
report["index_column"] = "ensd" in columns
report["index_value"] = bool(found) and found[0].ensd == 3

# 3. The form: the sampler panel builds an editor and reports the value.
from PySide6.QtWidgets import QApplication
app = QApplication.instance() or QApplication([])
from desktop.ui.sampler_panel import SamplerPanel
from desktop.ui.form import build_request, remember_values, restored_values
from desktop.engine.settings import Settings
panel = SamplerPanel()
panel.set_values({"ensd": 5})
values = panel.values()
report["form_editor"] = "ensd" in panel.editors
report["form_value"] = values.get("ensd") == 5
report["form_request"] = build_request({"prompt": "x", **values}).ensd == 5
settings = Settings()
remember_values({"prompt": "x", **values}, settings)
report["remembered"] = restored_values(settings).get("ensd") == 5

# 4. sandstorm info lists it.
from desktop.cli import info as info_cli
lines = "\n".join(info_cli._lines(meta))
report["info_lists"] = "Eta noise seed delta" in lines and "3" in lines

# 5. The CLI has a flag and builds the request with it.
from desktop.cli import generate as generate_cli
parser = argparse.ArgumentParser()
generate_cli.add_parser(parser.add_subparsers())
args = parser.parse_args(["generate", "--prompt", "p", "--ensd", "4"])
report["cli_flag"] = generate_cli.build_request(args).ensd == 4

print(json.dumps(report))
"""


@pytest.mark.slow
def test_a_setting_added_in_request_py_reaches_every_consumer(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(paths.PROJECT_ROOT / "desktop", copy / "desktop")
    for name in ("resources", "models"):
        (copy / name).symlink_to(paths.PROJECT_ROOT / name)
    request_py = copy / "desktop" / "engine" / "request.py"
    source = request_py.read_text(encoding="utf-8")
    anchor = "    init_image: str | None = setting("
    assert source.count(anchor) == 1
    request_py.write_text(source.replace(anchor, NEW_SETTING + anchor), encoding="utf-8")

    env = {**os.environ, "PYTHONPATH": str(copy), "QT_QPA_PLATFORM": "offscreen"}
    env["SANDSTORM_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECKS), str(tmp_path / "out")],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    failed = [check for check, ok in report.items() if not ok]
    assert not failed, f"not derived from the declaration: {failed}\n{report}"
    assert len(report) == 11

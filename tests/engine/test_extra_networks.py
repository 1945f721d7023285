"""The installed LoRAs and embeddings: folders searched, sidecars read, names resolved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from desktop.engine import extra_networks, paths
from desktop.engine.extra_networks import (
    find_network,
    list_embeddings,
    list_loras,
    missing_message,
    search_folders,
)


@pytest.fixture(autouse=True)
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's own ``models/`` (which may hold real LoRAs) moved to a tmp folder."""
    folder = tmp_path / "bundled-models"
    monkeypatch.setattr(paths, "BUNDLED_MODELS", folder)
    return folder


def _touch(path: Path, content: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _json(path: Path, data: object) -> Path:
    return _touch(path, json.dumps(data).encode())


def _comfy(root: Path) -> Path:
    for rel in ("models/checkpoints", "models/loras", "models/embeddings"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def _a1111(root: Path) -> Path:
    for rel in ("models/Stable-diffusion", "models/Lora", "embeddings"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def _own(kind: str = "loras") -> Path:
    return paths.user_models_dir() / kind


def test_lists_sorted_with_subfolders_and_skips_hidden_and_other_files(tmp_path: Path):
    own = _own()
    _touch(own / "Zebra.safetensors")
    _touch(own / "alpha.safetensors")
    _touch(own / "styles" / "Middle.safetensors")
    _touch(own / ".trash" / "deleted.safetensors")
    _touch(own / ".hidden.safetensors")
    _touch(own / "alpha.preview.png")
    _touch(own / "alpha.civitai.info", b"{}")
    _touch(own / "notes.txt")

    loras = list_loras()

    assert [item.name for item in loras] == ["alpha", "Middle", "Zebra"]
    middle = loras[1]
    assert (middle.kind, middle.folder, middle.path) == (
        "lora",
        own,
        own / "styles" / "Middle.safetensors",
    )
    assert middle.relative_name == "styles/Middle"
    assert all(item.usable and item.problem == "" for item in loras)
    # Nothing installed anywhere: an empty list, not an error.
    assert list_embeddings() == []


def test_pickle_loras_are_listed_with_a_problem_but_embeddings_are_not(tmp_path: Path):
    _touch(_own() / "old.pt")
    _touch(_own() / "older.ckpt")
    _touch(_own("embeddings") / "easynegative.pt")
    _touch(_own("embeddings") / "bad-hands.bin")
    _touch(_own("embeddings") / "style.safetensors")

    old, older = list_loras()
    assert "pickle file (.pt)" in old.problem and not old.usable
    assert "Sandstorm loads only .safetensors LoRAs" in older.problem
    assert ".ckpt" in older.problem
    embeddings = list_embeddings()
    assert [e.name for e in embeddings] == ["bad-hands", "easynegative", "style"]
    assert all(e.kind == "embedding" and e.usable for e in embeddings)


def test_civitai_and_a1111_sidecars_are_merged(tmp_path: Path):
    lora = _touch(_own() / "detail.safetensors")
    _touch(_own() / "detail.png")
    preview = _touch(_own() / "detail.preview.webp")
    _json(
        _own() / "detail.civitai.info",
        {
            "trainedWords": ["detailed, sharp", "Intricate"],
            "baseModel": "SD 1.5",
            "description": "<p>Adds <b>detail</b> &amp; texture.</p><p>v2</p>",
            "model": {"name": "Detail Tweaker", "description": "<p>the model</p>"},
        },
    )
    _json(
        _own() / "detail.json",
        {
            "activation text": "intricate, (fine lines, crisp:1.2)",
            "sd version": "SD1",
            "preferred weight": 0.6,
            "description": "",
            "notes": "works best below 1",
        },
    )

    (item,) = list_loras()

    assert item.path == lora
    assert item.preview == preview  # .preview.* before the plain image
    # A1111's words first, then civitai's; "Intricate" is a repeat of "intricate".
    assert item.trigger_words == ("intricate", "(fine lines, crisp:1.2)", "detailed", "sharp")
    assert item.base_model == "SD 1.5"  # the same family as "SD1", said more precisely
    assert item.preferred_weight == 0.6
    assert item.description == "works best below 1"
    assert item.title == "Detail Tweaker"


def test_civitai_only_sidecar_and_plain_preview(tmp_path: Path):
    _touch(_own() / "ink.safetensors")
    preview = _touch(_own() / "ink.JPG")
    _json(
        _own() / "ink.civitai.info",
        {"baseModel": "SDXL 1.0", "model": {"description": "<p>Ink &lt;3<br>lines</p>"}},
    )

    (item,) = list_loras()

    assert item.preview == preview
    assert item.base_model == "SDXL 1.0"
    assert item.description == "Ink <3\nlines"
    assert item.trigger_words == ()
    assert item.preferred_weight is None


@pytest.mark.parametrize(
    ("a1111", "civitai", "expected"),
    [
        ({"sd version": "SDXL"}, {"baseModel": "SD 1.5"}, "SDXL"),  # A1111's own file wins
        ({"sd version": "SD2"}, {}, "SD 2.x"),
        ({"sd version": "Unknown"}, {"baseModel": "Pony"}, "Pony"),
        ({"sd version": "SDXL"}, {"baseModel": "SDXL 1.0"}, "SDXL 1.0"),
        ({}, {}, ""),
    ],
)
def test_base_model(tmp_path: Path, a1111: dict, civitai: dict, expected: str):
    _touch(_own() / "x.safetensors")
    _json(_own() / "x.json", a1111)
    _json(_own() / "x.civitai.info", civitai)
    assert list_loras()[0].base_model == expected


@pytest.mark.parametrize("weight", [0, "abc", None, True, float("nan"), [1]])
def test_unset_or_odd_preferred_weight_is_none(tmp_path: Path, weight: object):
    _touch(_own() / "x.safetensors")
    (_own() / "x.json").write_text(
        json.dumps({"preferred weight": weight}, allow_nan=True), encoding="utf-8"
    )
    assert list_loras()[0].preferred_weight is None


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b"\xff\xfe\x00garbage", b'"a string"', b""],
)
def test_broken_sidecars_are_ignored(tmp_path: Path, content: bytes):
    _touch(_own() / "x.safetensors")
    _touch(_own() / "x.json", content)
    _touch(_own() / "x.civitai.info", content)
    (item,) = list_loras()
    assert (item.name, item.trigger_words, item.base_model, item.description) == ("x", (), "", "")


def test_a_sidecar_folder_in_place_of_a_file_is_ignored(tmp_path: Path):
    _touch(_own() / "x.safetensors")
    (_own() / "x.json").mkdir()
    assert list_loras()[0].trigger_words == ()


def test_unreadable_folder_and_sidecar_do_not_break_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _touch(_own() / "fine.safetensors")
    locked = _own() / "locked"
    _touch(locked / "secret.safetensors")
    sidecar = _json(_own() / "fine.civitai.info", {"trainedWords": ["w"]})
    # Permissions cannot lock root out, so the refusals are faked where they would happen.
    real_scandir, real_read_text = os.scandir, Path.read_text

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def read_text(self: Path, *args, **kwargs):
        if self == sidecar:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Path, "read_text", read_text)
    assert [(i.name, i.trigger_words) for i in list_loras()] == [("fine", ())]


def test_comfyui_and_a1111_installs_and_first_folder_wins(tmp_path: Path, bundled: Path):
    comfy = _comfy(tmp_path / "ComfyUI")
    webui = _a1111(tmp_path / "stable-diffusion-webui")
    _touch(bundled / "loras" / "shared.safetensors")
    _touch(_own() / "shared.safetensors")
    _touch(comfy / "models/loras" / "shared.safetensors")
    _touch(comfy / "models/loras" / "comfy-only.safetensors")
    _touch(webui / "models/Lora" / "sub" / "webui-only.safetensors")
    _touch(webui / "models/Lora" / "shared.safetensors")
    _touch(comfy / "models/embeddings" / "neg.pt")
    _touch(webui / "embeddings" / "neg.safetensors")
    _touch(webui / "embeddings" / "webui-emb.bin")
    sources = [str(comfy), webui, tmp_path / "unplugged-drive"]

    loras = {item.name: item for item in list_loras(sources)}

    assert sorted(loras) == ["comfy-only", "shared", "webui-only"]
    assert loras["shared"].path == bundled / "loras" / "shared.safetensors"
    assert loras["shared"].folder == bundled / "loras"
    assert loras["webui-only"].folder == webui / "models/Lora"
    embeddings = {item.name: item for item in list_embeddings(sources)}
    assert embeddings["neg"].path == comfy / "models/embeddings" / "neg.pt"
    assert embeddings["webui-emb"].folder == webui / "embeddings"
    assert search_folders("embedding", sources)[2:] == [
        comfy / "models/embeddings",
        webui / "embeddings",
    ]
    # Without the sources, only Sandstorm's own folders are searched.
    assert [item.name for item in list_loras()] == ["shared"]


def test_a_usable_file_beats_an_earlier_pickle_of_the_same_name(tmp_path: Path):
    comfy = _comfy(tmp_path / "ComfyUI")
    _touch(_own() / "style.pt")
    safe = _touch(comfy / "models/loras" / "style.safetensors")
    (item,) = list_loras([comfy])
    assert item.path == safe and item.usable


def test_find_network_by_name_suffix_path_and_case(tmp_path: Path):
    comfy = _comfy(tmp_path / "ComfyUI")
    top = _touch(_own() / "Detail.safetensors")
    lower = _touch(comfy / "models/loras" / "detail.safetensors")
    nested = _touch(comfy / "models/loras" / "styles" / "Detail.safetensors")
    _json(comfy / "models/loras" / "styles" / "Detail.json", {"activation text": "fine"})
    sources = [comfy]

    assert find_network("lora", "Detail", sources).path == top
    assert find_network("lora", "detail", sources).path == lower  # exact case first
    assert find_network("lora", "DETAIL", sources).path == top  # then the first in order
    assert find_network("lora", "detail.safetensors", sources).path == lower
    assert find_network("lora", " Detail.SafeTensors ", sources).path == top
    found = find_network("lora", "styles/Detail", sources)
    assert found.path == nested and found.trigger_words == ("fine",)
    assert find_network("lora", "styles\\detail", sources).path == nested
    assert find_network("lora", "missing", sources) is None
    assert find_network("lora", "", sources) is None
    assert find_network("embedding", "Detail", sources) is None


def test_find_embedding_and_pickle_lora(tmp_path: Path):
    emb = _touch(_own("embeddings") / "EasyNegative.safetensors")
    _touch(_own() / "old.ckpt")
    assert find_network("embedding", "easynegative").path == emb
    assert find_network("embedding", "EasyNegative.safetensors").path == emb
    assert "pickle" in find_network("lora", "old").problem


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown network kind"):
        extra_networks.list_networks("hypernetwork")
    with pytest.raises(ValueError, match="unknown network kind"):
        find_network("loras", "x")


def test_missing_messages_name_the_file_the_folders_and_the_way_out(tmp_path: Path):
    webui = _a1111(tmp_path / "webui")
    message = missing_message("lora", "detail_tweaker", [webui])
    assert message.startswith(
        "The LoRA 'detail_tweaker' is not installed: put detail_tweaker.safetensors in "
        "models/loras (searched: "
    )
    assert str(_own()) in message and str(webui / "models/Lora") in message
    assert message.endswith("or remove <lora:detail_tweaker> from the prompt.")

    embedding = missing_message("embedding", "bad-hands.pt", [webui])
    assert embedding.startswith("The embedding 'bad-hands' is not installed: put bad-hands.")
    assert "models/embeddings" in embedding and str(webui / "embeddings") in embedding
    assert embedding.endswith("or remove embedding:bad-hands from the prompt.")


def test_listing_reads_no_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _touch(_own() / "big.safetensors", b"\0" * 1024)
    _json(_own() / "big.json", {"activation text": "w"})
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args, **kwargs):
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    assert list_loras()[0].trigger_words == ("w",)
    assert find_network("lora", "big").trigger_words == ("w",)
    assert opened == ["big.json", "big.json"]

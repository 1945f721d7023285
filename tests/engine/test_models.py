"""Model discovery: classification from safetensors headers only, never crashing."""

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from desktop.engine import models
from desktop.engine.errors import ModelError
from desktop.engine.models import ModelInfo, inspect_file, scan

T = torch.zeros(1)


def _write(path, keys: dict[str, tuple]):
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    return path


UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"


def test_classifies_families(tmp_path):
    sd1 = _write(
        tmp_path / "sd1.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.transformer.text_model.x": (1,)},
    )
    sd2 = _write(
        tmp_path / "v2-1_768.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.model.transformer.x": (1,)},
    )
    sd2b = _write(
        tmp_path / "v2-1_512-base.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.model.transformer.x": (1,)},
    )
    xl = _write(
        tmp_path / "xl.safetensors",
        {
            UNET_IN: (2, 4, 1, 1),
            "conditioner.embedders.0.transformer.x": (1,),
            "conditioner.embedders.1.model.x": (1,),
        },
    )
    inpaint = _write(
        tmp_path / "inp.safetensors",
        {UNET_IN: (2, 9, 1, 1), "cond_stage_model.transformer.x": (1,)},
    )
    lora = _write(tmp_path / "lora.safetensors", {"lora_unet_down.alpha": (1,)})
    assert inspect_file(sd1).family == "sd1" and inspect_file(sd1).usable
    assert inspect_file(sd2).family == "sd2"
    assert inspect_file(sd2).prediction_type == "v_prediction"
    assert inspect_file(sd2b).prediction_type == "epsilon"
    assert inspect_file(xl).family == "sdxl" and inspect_file(xl).native_size == 1024
    nine = inspect_file(inpaint)
    assert nine.family == "sd1-inpaint" and nine.usable and nine.is_inpaint
    assert nine.base_family == "sd1" and nine.label == "SD1.5 inpainting"
    assert "LoRA" in inspect_file(lora).reason


def test_sidecar_overrides_prediction_type(tmp_path):
    sd2 = _write(
        tmp_path / "model.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.model.transformer.x": (1,)},
    )
    (tmp_path / "model.safetensors.sandstorm.json").write_text(
        json.dumps({"prediction_type": "epsilon"})
    )
    assert inspect_file(sd2).prediction_type == "epsilon"


def test_unreadable_files_are_listed_with_reason(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3 + b"garbage" * 100)
    good = _write(tmp_path / "trunc.safetensors", {UNET_IN: (64, 4, 3, 3)})
    good.write_bytes(good.read_bytes()[:-100])
    (tmp_path / "notes.txt.bin").write_bytes(b"hello")
    (tmp_path / "model.gguf").write_bytes(b"x")
    (tmp_path / "old.ckpt").write_bytes(b"x")
    found = {m.path.name: m for m in scan([tmp_path], include_builtin=False)}
    assert not found["empty.safetensors"].usable
    assert "too short" in found["empty.safetensors"].reason
    assert "header" in found["junk.safetensors"].reason
    assert "truncated" in found["trunc.safetensors"].reason
    assert found["old.ckpt"].format == "ckpt"
    assert "model.gguf" not in found  # not a checkpoint suffix at all


def test_scan_reads_headers_only(tmp_path, monkeypatch):
    """A big file is classified without reading its tensor data."""
    path = _write(
        tmp_path / "big.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.transformer.x": (256, 1024, 256)},
    )
    reads = []
    real_open = open

    def spy_open(file, mode="r", *a, **k):
        handle = real_open(file, mode, *a, **k)
        if str(file) == str(path):
            original = handle.read
            handle.read = lambda n=-1: reads.append(n) or original(n)
        return handle

    monkeypatch.setattr("builtins.open", spy_open)
    assert inspect_file(path).family == "sd1"
    assert all(0 <= n < 10_000 for n in reads), reads


def test_scan_finds_diffusers_folders_and_comfy_layout(tmp_path, tiny_sd):
    root = tmp_path / "ComfyUI" / "models"
    (root / "checkpoints").mkdir(parents=True)
    link = root / "checkpoints" / "tiny"
    link.symlink_to(tiny_sd)
    found = scan([root], include_builtin=False)
    assert [m.name for m in found] == ["tiny"]
    assert found[0].format == "diffusers" and found[0].family == "sd1"


def test_find_model_by_name_and_path(tmp_path, tiny_sd):
    assert models.find_model(str(tiny_sd)).family == "sd1"
    assert models.find_model("tiny-sd", scan([tiny_sd.parent], include_builtin=False)).usable


def test_scan_of_100_files_is_fast(tmp_path):
    for i in range(100):
        _write(
            tmp_path / f"m{i}.safetensors",
            {UNET_IN: (2, 4, 1, 1), "cond_stage_model.transformer.x": (1,)},
        )
    start = time.perf_counter()
    found = scan([tmp_path], include_builtin=False)
    elapsed = time.perf_counter() - start
    assert len(found) == 100
    print(f"scan of 100 files: {elapsed * 1000:.1f} ms")


def _info(path: str, usable: bool = True, fmt: str = "safetensors") -> ModelInfo:
    p = Path(path)
    name = p.name if fmt == "diffusers" else p.stem
    return ModelInfo(name, p, fmt, "sd1" if usable else "unknown", usable=usable)


def test_match_model_rules_in_order(tmp_path):
    dreamy = _info(str(tmp_path / "a" / "Dreamy_v8.safetensors"))
    folder = _info(str(tmp_path / "b" / "photo-xl"), fmt="diffusers")
    listed = [dreamy, folder]
    match = models.match_model
    # 1. full path, as written or once resolved
    assert match(listed, str(dreamy.path)) is dreamy
    assert match(listed, str(tmp_path / "a" / ".." / "a" / "Dreamy_v8.safetensors")) is dreamy
    # 2. discovered name
    assert match(listed, "photo-xl") is folder
    # 3. file name, also from another computer's path (POSIX or Windows separators)
    assert match(listed, "Dreamy_v8.safetensors") is dreamy
    assert match(listed, "/home/someone/models/Dreamy_v8.safetensors") is dreamy
    assert match(listed, r"C:\SD\models\Stable-diffusion\Dreamy_v8.safetensors") is dreamy
    assert match(listed, "D:\\diffusers\\photo-xl\\") is folder
    # 4. stem: another suffix of the same model, 5. the stem ignoring case
    assert match(listed, "Dreamy_v8.ckpt") is dreamy
    assert match(listed, "dreamy_V8") is dreamy
    # nothing else
    assert match(listed, "Dreamy") is None
    assert match(listed, "") is None
    assert match(listed, "   ") is None
    assert match([], "Dreamy_v8") is None


def test_match_model_prefers_usable_models(tmp_path):
    broken = _info(str(tmp_path / "x" / "model.safetensors"), usable=False)
    good = _info(str(tmp_path / "y" / "model.ckpt"))
    # Same name: the usable one wins even though the unusable one comes first.
    assert models.match_model([broken, good], "model") is good
    # A usable match by a weaker rule beats an unusable exact path.
    assert models.match_model([broken, good], str(broken.path)) is good
    # Only when nothing usable matches is the unusable model returned (to say why).
    assert models.match_model([broken], "model") is broken
    # Among equally strong matches of the same usability, the list order decides.
    other = _info(str(tmp_path / "z" / "model.safetensors"))
    assert models.match_model([other, good], "model") is other


def test_match_model_stronger_rules_win(tmp_path):
    by_stem = _info(str(tmp_path / "one" / "v1-5.safetensors"))
    by_name = ModelInfo("v1-5.safetensors", tmp_path / "two" / "odd", "diffusers", "sd1")
    assert models.match_model([by_stem, by_name], "v1-5.safetensors") is by_name
    assert models.match_model([by_stem, by_name], "v1-5") is by_stem


def test_find_model_uses_match_model_and_explains_unusable(tmp_path):
    _write(tmp_path / "Lora-thing.safetensors", {"lora_unet_down.weight": (4, 4)})
    _write(
        tmp_path / "Good.safetensors",
        {UNET_IN: (2, 4, 1, 1), "cond_stage_model.transformer.x": (1,)},
    )
    found = scan([tmp_path], include_builtin=False)
    assert models.find_model("good", found).name == "Good"
    assert models.find_model(r"E:\\old-pc\\Good.safetensors", found).name == "Good"
    lora = models.find_model("Lora-thing", found)
    assert not lora.usable and "LoRA" in lora.reason
    with pytest.raises(ModelError, match="No model named 'missing'"):
        models.find_model("missing", found)

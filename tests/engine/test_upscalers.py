"""Upscaler models: found, loaded safely with spandrel, run in tiles, saved with metadata.

The models are tiny but real: spandrel's own architecture classes (Compact, ESRGAN, SwinIR)
with few features, their state dicts saved as ``.safetensors`` and ``.pth``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from desktop.engine import paths, upscalers
from desktop.engine.errors import Cancelled, ImageError, ModelError, RequestError, SandstormError
from desktop.engine.gallery import save_png_with_metadata
from desktop.engine.metadata import parse_parameters, read_metadata
from desktop.engine.request import GenerationRequest
from desktop.engine.upscalers import (
    LANCZOS,
    UpscaleRecord,
    UpscalerError,
    UpscalerInfo,
    find_upscaler,
    list_upscalers,
    load_upscaler,
    read_upscale_record,
    save_upscaled,
    target_size,
)

ROOT = Path(__file__).resolve().parents[2]
#: spandrel's SwinIR calls torch.meshgrid without ``indexing`` while it is built.
SWINIR_NOISE = "ignore:torch.meshgrid:UserWarning"
UNPICKLED: list[str] = []


class CustomWeights:
    """A class a pickle needs code for; unpickling it would record itself in UNPICKLED."""

    def __init__(self) -> None:
        self.weight = torch.zeros(4)

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append("ran")
        self.__dict__.update(state)


def _compact(scale: int) -> dict[str, torch.Tensor]:
    from spandrel.architectures.Compact import Compact

    return Compact(num_feat=8, num_conv=2, upscale=scale).state_dict()


def _esrgan(scale: int) -> dict[str, torch.Tensor]:
    from spandrel.architectures.ESRGAN import ESRGAN

    state = ESRGAN(num_filters=8, num_blocks=1, scale=scale).state_dict()
    # Random weights give a nearly black image; a stronger, brighter last layer gives one
    # with detail everywhere, so that tiling differences would show.
    last = max((k for k in state if k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    state[last] = state[last] * 8
    state[last.replace("weight", "bias")] = torch.full_like(
        state[last.replace("weight", "bias")], 0.5
    )
    return state


def _swinir() -> dict[str, torch.Tensor]:
    import warnings

    from spandrel.architectures.SwinIR import SwinIR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = SwinIR(
            embed_dim=12,
            depths=[1],
            num_heads=[1],
            window_size=4,
            upscale=2,
            upsampler="pixelshuffledirect",
            img_size=16,
        )
    return model.state_dict()


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny upscaler files by name, good and bad."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("upscalers")
    files = {
        "4x-compact": _save(_compact(4), folder / "4x-compact.safetensors"),
        "2x-compact": _save(_compact(2), folder / "2x-compact.pth"),
        "4x-esrgan": _save(_esrgan(4), folder / "4x-esrgan.pth"),
        "2x-swinir": _save(_swinir(), folder / "2x-swinir.safetensors"),
        "1x-denoise": _save(_compact(1), folder / "1x-denoise.safetensors"),
        "unknown": _save({"encoder.weight": torch.zeros(4, 4)}, folder / "unknown.safetensors"),
        "custom": folder / "custom.pth",
        "empty": folder / "empty.pth",
    }
    torch.save({"params_ema": CustomWeights()}, files["custom"])
    files["empty"].write_bytes(b"")
    for name, good in (("cut-safetensors", "4x-compact"), ("cut-pth", "2x-compact")):
        data = files[good].read_bytes()
        files[name] = folder / f"cut{files[good].suffix}"
        files[name].write_bytes(data[: len(data) // 2])
    return files


@pytest.fixture(scope="session")
def compact4(model_files: dict[str, Path]) -> upscalers.Upscaler:
    return load_upscaler(UpscalerInfo("4x-compact", model_files["4x-compact"]), dtype=torch.float32)


@pytest.fixture(scope="session")
def esrgan4(model_files: dict[str, Path]) -> upscalers.Upscaler:
    return load_upscaler(UpscalerInfo("4x-esrgan", model_files["4x-esrgan"]), dtype=torch.float32)


@pytest.fixture(scope="session")
def compact2(model_files: dict[str, Path]) -> upscalers.Upscaler:
    return load_upscaler(UpscalerInfo("2x-compact", model_files["2x-compact"]), dtype=torch.float32)


@pytest.fixture
def no_bundled_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bundled ``models/`` folder, so only the test's files are found."""
    bundled = tmp_path / "bundled-models"
    bundled.mkdir()
    monkeypatch.setattr(paths, "BUNDLED_MODELS", bundled)
    return bundled


def _picture(width: int = 72, height: int = 56, mode: str = "RGB") -> Image.Image:
    """A picture with gradients and noise, so every tile has detail."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    noise = rng.uniform(0, 255, (height, width))
    pixels = np.stack([x, y, noise], -1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# -- detection and sizes -----------------------------------------------------------------------


@pytest.mark.filterwarnings(SWINIR_NOISE)
@pytest.mark.parametrize(
    ("name", "architecture", "scale"),
    [
        ("4x-compact", "RealESRGAN Compact", 4),
        ("2x-compact", "RealESRGAN Compact", 2),
        ("4x-esrgan", "ESRGAN", 4),
        ("2x-swinir", "SwinIR", 2),
    ],
)
def test_spandrel_detects_the_architecture_and_scale(
    model_files: dict[str, Path], name: str, architecture: str, scale: int
):
    upscaler = load_upscaler(UpscalerInfo(name, model_files[name]))

    assert (upscaler.name, upscaler.architecture, upscaler.native_scale) == (
        name,
        architecture,
        scale,
    )
    assert upscaler.tile_bytes_per_pixel > 0
    image = _picture(24, 20)
    assert upscaler.upscale(image, scale).size == (24 * scale, 20 * scale)


def test_cpu_runs_in_fp32_unless_the_cpu_has_native_bf16(model_files: dict[str, Path]):
    from desktop.engine.devices import probe

    upscaler = load_upscaler(UpscalerInfo("4x-compact", model_files["4x-compact"]), "cpu")

    native = probe("cpu").native_bf16
    assert upscaler.dtype == (torch.bfloat16 if native else torch.float32)


@pytest.mark.filterwarnings(SWINIR_NOISE)
def test_a_format_the_model_fails_in_falls_back_to_fp32_unless_asked_for(
    model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    """spandrel says SwinIR supports bf16, but on the CPU it keeps a float32 buffer."""
    info = UpscalerInfo("2x-swinir", model_files["2x-swinir"])
    monkeypatch.setattr(upscalers, "_default_dtype", lambda *_args: torch.bfloat16)

    assert load_upscaler(info).dtype == torch.float32
    with pytest.raises(UpscalerError, match="The SwinIR upscaler fails to run: "):
        load_upscaler(info, dtype=torch.bfloat16)


def test_2x_and_4x_models_give_their_sizes(compact2, compact4):
    image = _picture()

    assert compact2.upscale(image, 2).size == (144, 112)
    assert compact4.upscale(image, 4).size == (288, 224)
    assert compact4.upscale(image, 4).mode == "RGB"


def test_a_4x_model_asked_for_2x_runs_at_4x_then_resizes_with_lanczos(compact4):
    image = _picture()

    plan = compact4.plan(image.width, image.height, 2)
    result = compact4.upscale(image, 2)

    assert (plan.passes, result.size) == (1, (144, 112))
    expected = compact4.upscale(image, 4).resize((144, 112), Image.Resampling.LANCZOS)
    assert np.array_equal(_levels(result), _levels(expected))


def test_a_2x_model_asked_for_3x_runs_twice_then_resizes(compact2):
    image = _picture(30, 20)

    plan = compact2.plan(30, 20, 3)
    result = compact2.upscale(image, 3)

    assert (plan.passes, plan.target, result.size) == (2, (90, 60), (90, 60))


def test_target_size_rounds_to_whole_pixels():
    assert target_size(1024, 768, 4) == (4096, 3072)
    assert target_size(100, 75, 1.5) == (150, 113)


def test_lanczos_needs_no_model():
    upscaler = load_upscaler(upscalers.LANCZOS_INFO)
    image = _picture()
    calls: list[tuple[int, int]] = []

    result = upscaler.upscale(image, 2.5, progress=lambda done, total: calls.append((done, total)))

    assert (upscaler.name, upscaler.architecture, upscaler.is_lanczos) == (LANCZOS, LANCZOS, True)
    expected = image.resize((180, 140), Image.Resampling.LANCZOS)
    assert np.array_equal(_levels(result), _levels(expected))
    assert calls == [(1, 1)]


# -- tiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 63, 64, 65, 100, 127, 200, 511, 513, 1000, 1031])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (48, 12), (512, 32)])
def test_tiles_cover_the_side_and_their_weights_sum_to_one(length: int, tile: int, overlap: int):
    spans = upscalers.tile_spans(length, tile, overlap)

    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(end - start <= tile for start, end in spans)
    assert all(a[1] - b[0] >= overlap for a, b in pairwise(spans))
    for scale in (1, 4):
        total = torch.zeros(length * scale)
        for (start, end), weight in zip(spans, upscalers.blend_weights(spans, scale), strict=True):
            total[start * scale : end * scale] += weight
        assert torch.allclose(total, torch.ones_like(total))


def test_tiled_output_equals_one_tile(compact4):
    image = _picture()

    single = compact4.upscale(image, 4, tile=1000)
    tiled = compact4.upscale(image, 4, tile=32)

    assert compact4.plan(72, 56, 4, tile=32).tiles == 3 * 2
    assert np.abs(_levels(tiled) - _levels(single)).max() <= 2


def test_tiles_leave_no_seams_on_a_deep_model(esrgan4):
    """ESRGAN sees further than the blended part of the overlap, so tiles differ slightly
    from one big tile; the blend keeps the difference small, also along the seams."""
    image = _picture()

    single = _levels(esrgan4.upscale(image, 4, tile=1000))
    tiled = _levels(esrgan4.upscale(image, 4, tile=48))

    assert single.std() > 10  # the output has detail for a seam to show in
    diff = np.abs(tiled - single)
    assert diff.mean() < 0.05
    assert diff.max() <= 2
    # The seams are where the tiles meet: the middle of each overlap.
    spans = upscalers.tile_spans(72, 48, 12)
    seams = [(a[1] + b[0]) // 2 * 4 for a, b in pairwise(spans)]
    for column in seams:
        band = diff[:, column - 8 : column + 8]
        assert band.mean() < 0.1


def test_progress_counts_every_tile(compact2):
    calls: list[tuple[int, int]] = []

    compact2.upscale(_picture(30, 20), 3, tile=16, progress=lambda d, t: calls.append((d, t)))

    total = compact2.plan(30, 20, 3, tile=16).tiles
    assert total > 2
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_cancel_stops_between_tiles(compact4):
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, _total: int) -> None:
        calls.append(done)
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        compact4.upscale(_picture(), 4, tile=32, cancel=cancel, progress=progress)
    assert calls == [1, 2]


def test_cancel_before_the_start_runs_nothing(compact4):
    cancel = threading.Event()
    cancel.set()
    calls: list[int] = []

    with pytest.raises(Cancelled):
        compact4.upscale(_picture(), 4, cancel=cancel, progress=lambda d, _t: calls.append(d))
    assert calls == []


def test_the_automatic_tile_follows_the_free_memory(compact4, monkeypatch: pytest.MonkeyPatch):
    assert compact4.plan(2048, 2048, 2).tile == upscalers.MAX_TILE_CPU

    monkeypatch.setattr(upscalers, "_free_memory", lambda _device: 300 * 2**20)
    small = compact4.plan(256, 256, 2).tile

    assert upscalers.MIN_TILE <= small < upscalers.MAX_TILE_CPU


# -- image modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"), [("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("CMYK", "RGB")]
)
def test_image_modes_are_kept_or_made_rgb(compact2, mode: str, expected: str):
    image = _picture(20, 16, mode)

    result = compact2.upscale(image, 2)

    assert (result.mode, result.size) == (expected, (40, 32))


def test_transparency_is_resized_with_lanczos(compact2):
    image = _picture(20, 16).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((20, 16))
    image.putalpha(alpha)

    result = compact2.upscale(image, 2)

    expected = alpha.resize((40, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(_levels(result.getchannel("A")), _levels(expected))


def test_a_palette_image_with_transparency_keeps_it(compact2):
    image = _picture(20, 16).convert("P")
    image.info["transparency"] = 0

    assert compact2.upscale(image, 2).mode == "RGBA"


# -- refused requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 1.0, 0.5, 0, -2, math.nan, math.inf])
def test_a_factor_that_does_not_enlarge_is_refused(compact4, scale: float):
    with pytest.raises(RequestError) as caught:
        compact4.upscale(_picture(), scale)
    assert str(caught.value).endswith(".")
    assert str(scale) in str(caught.value)


def test_a_result_over_the_size_limit_is_refused_before_any_work(compact4):
    calls: list[int] = []

    with pytest.raises(RequestError, match="16384 pixels a side"):
        compact4.upscale(Image.new("RGB", (5000, 400)), 4, progress=lambda d, _t: calls.append(d))
    assert calls == []


def test_a_result_that_does_not_fit_in_memory_is_refused(compact4, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(upscalers, "_free_memory", lambda _device: 64 * 2**20)

    with pytest.raises(RequestError, match=r"needs about .* of memory and 0\.1 GB is free"):
        compact4.plan(2048, 2048, 4)


def test_an_empty_image_is_refused(compact4):
    with pytest.raises(ImageError):
        compact4.plan(0, 10, 2)


# -- bad files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "unknown",
            "unknown.safetensors is not an upscaler Sandstorm recognises: spandrel found no known "
            "architecture in its weights.",
        ),
        (
            "custom",
            "custom.pth needs to run code to load (a pickle with custom classes); Sandstorm never "
            "runs code from model files; use a .safetensors version.",
        ),
        (
            "1x-denoise",
            "1x-denoise.safetensors is a 1× restoration (denoising, deblurring or JPEG clean-up) "
            "model (RealESRGAN Compact), not an upscaler: Sandstorm upscales only with "
            "super-resolution models.",
        ),
        ("empty", "empty.pth is empty (0 bytes); download it again."),
    ],
)
def test_bad_files_give_one_clear_sentence(model_files: dict[str, Path], name: str, message: str):
    with pytest.raises(UpscalerError) as caught:
        load_upscaler(UpscalerInfo(name, model_files[name]))

    assert str(caught.value) == message
    assert isinstance(caught.value, ModelError) and isinstance(caught.value, SandstormError)
    assert UNPICKLED == []


@pytest.mark.parametrize("name", ["cut-safetensors", "cut-pth"])
def test_a_truncated_file_is_reported_as_damaged(model_files: dict[str, Path], name: str):
    with pytest.raises(UpscalerError, match=r"is damaged or incomplete \(a truncated download\?\)"):
        load_upscaler(UpscalerInfo(name, model_files[name]))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_file_is_never_run(tmp_path: Path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 3, 3), torch.zeros(1, 3, 8, 8)), path)

    with pytest.raises(UpscalerError, match="is a TorchScript program"):
        load_upscaler(UpscalerInfo("scripted", path))


def test_a_file_that_vanished_is_reported(tmp_path: Path):
    with pytest.raises(UpscalerError, match="does not exist"):
        load_upscaler(UpscalerInfo("gone", tmp_path / "gone.pth"))


# -- finding the files ---------------------------------------------------------------------------


def _install(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"weights")


def test_upscalers_are_found_in_own_comfyui_and_a1111_folders(
    tmp_path: Path, no_bundled_models: Path
):
    _install(paths.user_models_dir() / "upscale_models", "4x-UltraSharp.pth", "notes.txt")
    _install(paths.user_models_dir() / "upscale_models" / "more", "2x-sub.safetensors")
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    _install(comfy / "models" / "upscale_models", "4x_foolhardy_Remacri.pth", "4x-UltraSharp.pth")
    webui = tmp_path / "stable-diffusion-webui"
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    _install(webui / "models" / "ESRGAN", "4x_NMKD-Siax.pth", ".hidden.pth")
    _install(webui / "models" / "RealESRGAN", "RealESRGAN_x4plus.pth")
    _install(webui / "models" / "SwinIR", "SwinIR_4x.safetensors")
    _install(webui / "models" / "DAT", "DAT_x4.safetensors")

    found = list_upscalers([comfy, webui])

    assert [info.name for info in found] == [
        LANCZOS,
        "2x-sub",
        "4x-UltraSharp",
        "4x_foolhardy_Remacri",
        "4x_NMKD-Siax",
        "DAT_x4",
        "RealESRGAN_x4plus",
        "SwinIR_4x",
    ]
    own = paths.user_models_dir() / "upscale_models" / "4x-UltraSharp.pth"
    assert find_upscaler("4x-UltraSharp", [comfy, webui]).path == own
    assert (
        find_upscaler("4x_NMKD-Siax.pth", [webui]).path == webui / "models/ESRGAN/4x_NMKD-Siax.pth"
    )


def test_find_upscaler_takes_lanczos_a_stem_a_file_name_or_a_path(
    tmp_path: Path, no_bundled_models: Path
):
    _install(paths.user_models_dir() / "upscale_models", "4x-Fast.safetensors")
    elsewhere = tmp_path / "elsewhere" / "2x-Other.pth"
    _install(elsewhere.parent, elsewhere.name)

    assert find_upscaler("lanczos") == upscalers.LANCZOS_INFO
    assert find_upscaler("4x-fast").name == "4x-Fast"
    assert find_upscaler("4x-Fast.safetensors").name == "4x-Fast"
    assert find_upscaler(str(elsewhere)) == UpscalerInfo("2x-Other", elsewhere)


def test_a_missing_name_says_where_to_put_the_file(no_bundled_models: Path):
    with pytest.raises(UpscalerError) as caught:
        find_upscaler("4x-Nowhere")
    assert str(caught.value) == (
        "There is no upscaler named 4x-Nowhere; put the file in models/upscale_models."
    )
    with pytest.raises(UpscalerError, match="no upscaler name was given"):
        find_upscaler("  ")


def test_a_bad_file_does_not_hide_the_others(model_files: dict[str, Path], no_bundled_models: Path):
    folder = paths.user_models_dir() / "upscale_models"
    folder.mkdir(parents=True)
    for name in ("unknown", "custom", "empty", "4x-compact"):
        (folder / model_files[name].name).write_bytes(model_files[name].read_bytes())

    names = [info.name for info in list_upscalers()]
    good = load_upscaler(find_upscaler("4x-compact"))

    assert names == [LANCZOS, "4x-compact", "custom", "empty", "unknown"]
    assert good.upscale(_picture(16, 16), 4).size == (64, 64)


# -- saving --------------------------------------------------------------------------------------


def test_save_upscaled_carries_the_source_settings_and_never_overwrites(tmp_path: Path, compact4):
    source = tmp_path / "gallery" / "2026-01-02" / "00007-1234.png"
    request = GenerationRequest(prompt="a red fox in the snow", seed=1234, steps=12)
    save_png_with_metadata(_picture(), request, source)
    image = compact4.upscale(Image.open(source), 4)
    folder = tmp_path / "gallery" / "2026-01-03"

    first = save_upscaled(source, image, "4x-compact", 4.0, folder)
    first_bytes = first.read_bytes()
    second = save_upscaled(source, image, "4x-compact", 4.0, folder)

    assert first == folder / "00007-1234-upscaled-4x.png"
    assert second == folder / "00007-1234-upscaled-4x-2.png"
    assert first.read_bytes() == first_bytes
    assert {p.name for p in folder.iterdir()} == {first.name, second.name}
    meta = read_metadata(first)
    assert meta.source == "sandstorm"
    assert meta.request is not None
    assert (meta.request.prompt, meta.request.seed, meta.request.steps) == (
        "a red fox in the snow",
        1234,
        12,
    )
    parsed = parse_parameters(meta.raw["parameters"])
    assert parsed is not None and parsed[0] == "a red fox in the snow"
    assert parsed[2]["Steps"] == "12"
    assert parsed[2]["Postprocess upscale by"] == "4"
    assert parsed[2]["Postprocess upscaler"] == "4x-compact"
    assert parsed[2]["Postprocess source"] == "00007-1234.png"
    assert read_upscale_record(meta.raw) == UpscaleRecord(4.0, "4x-compact", "00007-1234.png")
    with Image.open(first) as saved:
        assert saved.size == (288, 224)


def test_save_upscaled_of_an_image_without_settings(tmp_path: Path):
    source = tmp_path / "photo.png"
    _picture().save(source)
    name = "Lanczos, sharp: v2"

    saved = save_upscaled(source, _picture(144, 112), name, 2.5, tmp_path / "out")

    meta = read_metadata(saved)
    assert saved.name == "photo-upscaled-2.5x.png"
    assert "parameters" not in meta.raw
    assert read_upscale_record(meta.raw) == UpscaleRecord(2.5, name, "photo.png")


def test_an_a1111_extras_record_is_read():
    raw = {"postprocessing": "Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+"}

    assert read_upscale_record(raw) == UpscaleRecord(2.0, "R-ESRGAN 4x+", "")
    assert read_upscale_record({}) is None


# -- cheap import ----------------------------------------------------------------------------------


def test_importing_the_module_loads_neither_torch_nor_spandrel():
    code = (
        "import sys\nimport desktop.engine.upscalers\n"
        "print(sorted(m for m in ('torch', 'spandrel', 'PIL', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

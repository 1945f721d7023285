"""Device and precision selection."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from desktop.engine import devices, paths
from desktop.engine.errors import RequestError, SandstormError


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this computer has neither CUDA nor an Apple GPU, whatever it really has."""
    monkeypatch.setattr(devices, "_cuda_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture
def one_cuda_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_cuda_available", lambda: True)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="checks the real fallback of a computer without a GPU",
)
def test_auto_on_this_cpu_machine_is_cpu_with_its_native_format() -> None:
    device = devices.resolve_device("auto")
    assert device == "cpu"
    native = devices.probe(device).native_bf16
    assert native == torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert devices.default_dtype(device) == (torch.bfloat16 if native else torch.float32)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, cpu_only) -> None:
    assert devices.resolve_device() == "cpu"
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == "mps"
    monkeypatch.setattr(devices, "_cuda_available", lambda: True)
    assert devices.resolve_device("AUTO") == "cuda"


def test_explicit_cuda_without_gpu_is_a_clear_error(cpu_only) -> None:
    with pytest.raises(RequestError, match="No CUDA GPU is available"):
        devices.resolve_device("cuda")
    with pytest.raises(SandstormError, match="use cpu or auto"):
        devices.resolve_device("cuda:0")


def test_explicit_mps_without_apple_gpu_is_a_clear_error(cpu_only) -> None:
    with pytest.raises(RequestError, match=r"mps\) is not available"):
        devices.resolve_device("mps")


def test_cuda_index_must_exist(one_cuda_gpu) -> None:
    assert devices.resolve_device("cuda") == "cuda"
    assert devices.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(RequestError, match="has 1 CUDA GPU"):
        devices.resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "cpu:0"])
def test_unknown_device_names_are_rejected(name: str, cpu_only) -> None:
    with pytest.raises(RequestError, match="Unknown device"):
        devices.resolve_device(name)


def test_cpu_is_always_available(cpu_only) -> None:
    assert devices.resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        # bf16 where the CPU computes it natively (AVX512_BF16/AMX), else fp32.
        ("cpu", torch.bfloat16 if devices.probe("cpu").native_bf16 else torch.float32),
        ("cuda", torch.float16),
        ("cuda:1", torch.float16),
        ("mps", torch.float16),
    ],
)
def test_default_dtype_per_device(device: str, expected: torch.dtype) -> None:
    assert devices.default_dtype(device) == expected
    assert devices.default_dtype(device, "auto") == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)],
)
def test_dtype_override(choice: str, expected: torch.dtype) -> None:
    assert devices.default_dtype("cuda", choice) == expected
    assert devices.dtype_name(expected) == choice


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(RequestError, match="Unknown precision 'fp8'"):
        devices.default_dtype("cpu", "fp8")


def test_importing_devices_does_not_import_torch() -> None:
    code = "import sys, desktop.engine.devices; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=paths.PROJECT_ROOT,
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", "auto"),
        ("", "auto"),
        ("  ", "auto"),
        ("CPU", "cpu"),
        (" mps ", "mps"),
        ("cuda", "cuda"),
        ("cuda:0", "cuda:0"),
        ("CUDA:1", "cuda:1"),
        ("cuda:01", "cuda:1"),
        ("cuda:12", "cuda:12"),
    ],
)
def test_parse_device_accepts_and_normalises(text: str, expected: str) -> None:
    assert devices.parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1.5", "cpu:0", "tpu"])
def test_parse_device_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(RequestError, match="Unknown device") as caught:
        devices.parse_device(text)
    assert devices.DEVICE_CHOICES_HELP in str(caught.value)
    # A ValueError too, so argparse ``type=parse_device`` reports it as a bad value.
    assert isinstance(caught.value, ValueError)


def test_parse_device_needs_no_gpu(cpu_only) -> None:
    # Parsing only checks the form; resolve_device checks the device is there.
    assert devices.parse_device("cuda:3") == "cuda:3"
    with pytest.raises(RequestError, match="No CUDA GPU"):
        devices.resolve_device("cuda:3")


def test_resolve_device_normalises_through_parse_device(one_cuda_gpu) -> None:
    assert devices.resolve_device(" CUDA:00 ") == "cuda:0"
    assert devices.resolve_device("") == "cuda"


def test_every_menu_choice_parses() -> None:
    for choice in devices.DEVICE_CHOICES:
        assert devices.parse_device(choice) == choice


# -- the compute plan, decided from made-up facts -----------------------------------------


def _plan(facts: devices.DeviceFacts, family: str = "sd1", **options: object):
    return devices.plan_compute(facts, devices.ComputeOptions(**options), family)  # type: ignore[arg-type]


def test_cpu_with_native_bf16_runs_unet_in_bf16_and_vae_in_fp32() -> None:
    plan = _plan(devices.DeviceFacts("cpu", "AVX512", native_bf16=True, physical_cores=8))
    assert (plan.dtype, plan.vae_dtype, plan.memory_mode, plan.threads) == (
        "bf16",
        "fp32",
        "off",
        8,
    )
    assert any("natively" in reason for reason in plan.reasons)


def test_built_in_model_stays_fp32_on_the_cpu_unless_asked() -> None:
    facts = devices.DeviceFacts("cpu", "AVX512", native_bf16=True, physical_cores=2)
    plan = _plan(facts, family="builtin")
    assert plan.dtype == "fp32" and any("too small" in r for r in plan.reasons)
    assert _plan(facts, family="builtin", precision="bf16").dtype == "bf16"
    assert _plan(facts, family="sdxl").dtype == "bf16"


def test_cpu_without_native_bf16_stays_fp32_and_never_fp16() -> None:
    facts = devices.DeviceFacts("cpu", "AVX2", native_bf16=False)
    assert _plan(facts).dtype == "fp32"
    assert _plan(facts, precision="fp16").dtype == "fp32"
    assert _plan(facts, vae_precision="fp16").vae_dtype == "fp32"
    # Asked for explicitly, bf16 is honoured, with the reason it is slow here.
    forced = _plan(facts, precision="bf16")
    assert forced.dtype == "bf16" and any("emulated" in r for r in forced.reasons)


def test_gpu_precision_bf16_where_supported_else_fp16_and_sdxl_vae_upcast() -> None:
    ampere = devices.DeviceFacts(
        "cuda", gpu_name="A100", gpu_bf16=True, free_memory=40 * devices.GIB
    )
    turing = devices.DeviceFacts(
        "cuda", gpu_name="T4", gpu_bf16=False, free_memory=15 * devices.GIB
    )
    assert (_plan(ampere).dtype, _plan(ampere).vae_dtype) == ("bf16", "bf16")
    assert (_plan(turing).dtype, _plan(turing).vae_dtype) == ("fp16", "fp16")
    assert _plan(turing, "sdxl").vae_dtype == "fp32"
    assert _plan(devices.DeviceFacts("mps", gpu_name="Apple GPU")).dtype == "fp16"


@pytest.mark.parametrize(
    ("free_gb", "family", "mode"),
    [
        (24, "sdxl", "off"),
        (9, "sdxl", "tiling"),
        (7, "sdxl", "offload"),
        (3, "sdxl", "sequential"),
        (6, "sd1", "off"),
        (3, "sd1", "tiling"),
        (2.2, "sd1", "offload"),
        (1, "sd1", "sequential"),
    ],
)
def test_memory_mode_follows_free_vram(free_gb: float, family: str, mode: str) -> None:
    facts = devices.DeviceFacts("cuda", gpu_name="GPU", free_memory=int(free_gb * devices.GIB))
    plan = _plan(facts, family)
    assert plan.memory_mode == mode
    assert any(f"memory mode {mode}" in line for line in plan.lines())


def test_memory_mode_setting_wins_and_unknown_values_are_refused() -> None:
    facts = devices.DeviceFacts("cuda", gpu_name="GPU", free_memory=80 * devices.GIB)
    assert _plan(facts, memory_mode="offload").memory_mode == "offload"
    assert _plan(devices.DeviceFacts("cpu"), memory_mode="offload").memory_mode == "off"
    with pytest.raises(devices.RequestError, match="memory mode"):
        devices.ComputeOptions(memory_mode="tiny")
    with pytest.raises(devices.RequestError, match="precision"):
        devices.ComputeOptions(precision="fp8")


def test_probe_reads_this_cpu_through_torch() -> None:
    facts = devices.probe("cpu")
    assert facts.kind == "cpu" and facts.threads and facts.threads >= 1
    import torch

    assert facts.native_bf16 == bool(torch.cpu._is_avx512_bf16_supported()) or bool(
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )

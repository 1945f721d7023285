"""Is one torch build as fast on the CPU as another? The same measurement in each interpreter.

``python -m bench.torch_build_bench [--python PY ...] [--rounds N] [--repeats N] [--threads N]
[--size PX] [--imports N] [--json OUT]``

Written for the move from torch 2.13.0+cpu to PyPI's torch 2.14.1 (a CUDA build, which is
what pip finds when PyTorch's CPU index is out of reach, running on a machine without a GPU).
Each interpreter (``--python``, repeatable; default: this one) runs, in its own child
processes, one after another and never two at once:

- ``import``: wall time of ``PY -c "import torch"`` from process launch, best and median of
  ``--imports`` launches, beside ``PY -c pass`` (the interpreter's own start-up), and the
  peak RSS of the importing process.
- ``unet``: one CFG step of a random-weight SD1.5 ``UNet2DConditionModel`` built from
  ``resources/model_configs/sd15`` (batch 2, ``--size``/8 latents, 77x768 context, timestep
  500, ``torch.inference_mode()``) in fp32 and in bf16 (weights and inputs cast, as the
  engine does on a CPU with native bf16), ``--threads`` threads, one warm-up of each and then
  ``--repeats`` timed steps, fp32 and bf16 alternating; best and median. GFLOP/s from one
  counted step (``torch.utils.flop_counter``). Same seeds in every interpreter.

``--rounds N`` repeats the whole list of interpreters N times (A, B, A, B, ...), so a noisy
stretch of the machine hits both. Results: a table, and with ``--json`` a file. Nothing is
asserted: the engineer reads the numbers. The default (256², 3 repeats, 2 threads) is the
setup of the earlier "bf16 is 2.45x faster than fp32 for an SD1.5 UNet" figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Marks the result line a child prints on stdout (the rest is the libraries' noise).
CHILD_MARK = "TORCH_BUILD_BENCH_RESULT "
CHILD_TIMEOUT_S = 1800
IMPORT_TIMEOUT_S = 120
TIMESTEP = 500
TEXT_TOKENS, TEXT_DIM = 77, 768


# ---------------------------------------------------------------------------- children


def _build_info() -> dict[str, Any]:
    import torch

    config = torch.__config__.show()
    onednn = re.search(r"(?:oneDNN|MKL-DNN) v([0-9.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([0-9.]+)", config)
    native = any(
        bool(getattr(torch.cpu, name, lambda: False)())
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "onednn": onednn.group(1) if onednn else None,
        "mkl": mkl.group(1) if mkl else None,
        "torch_install_mb": round(_installed_mb(Path(torch.__file__).parent), 1),
    }


def _installed_mb(torch_dir: Path) -> float:
    """Disk used by torch and the GPU libraries pip installs beside it (CUDA builds)."""
    site = torch_dir.parent
    total = 0
    for name in ("torch", "torchvision", "nvidia", "triton", "cuda", "cuda_bindings"):
        folder = site / name
        if folder.is_dir():
            total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total / 2**20


def _unet_child(size: int, repeats: int, threads: int) -> dict[str, Any]:
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from desktop.engine import paths

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = UNet2DConditionModel.load_config(paths.MODEL_CONFIGS / "sd15" / "unet")
    start = time.perf_counter()
    unet = UNet2DConditionModel.from_config(config).eval().requires_grad_(False)
    build_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, size // 8, size // 8, generator=generator)
    context = torch.randn(2, TEXT_TOKENS, TEXT_DIM, generator=generator)
    timestep = torch.tensor(TIMESTEP)

    def step(dtype: torch.dtype) -> float:
        # torch's own Module.to: diffusers' override warns on every cast.
        torch.nn.Module.to(unet, dtype)
        begin = time.perf_counter()
        with torch.inference_mode():
            unet(latents.to(dtype), timestep, encoder_hidden_states=context.to(dtype))
        return time.perf_counter() - begin

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        unet(latents, timestep, encoder_hidden_states=context)
    flops = counter.get_total_flops()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for dtype in dtypes.values():  # warm-up
        step(dtype)
    for index in range(repeats):
        order = list(dtypes) if index % 2 == 0 else list(reversed(dtypes))
        for name in order:
            times[name].append(step(dtypes[name]))
    result: dict[str, Any] = {
        "build": _build_info(),
        "threads": torch.get_num_threads(),
        "size": size,
        "unet_build_s": round(build_s, 2),
        "gflop_per_step": round(flops / 1e9, 1),
    }
    for name, values in times.items():
        best = min(values)
        result[name] = {
            "best_s": round(best, 3),
            "median_s": round(statistics.median(values), 3),
            "all_s": [round(v, 3) for v in values],
            "gflops": round(flops / 1e9 / best, 1),
        }
    result["bf16_speedup"] = round(result["fp32"]["best_s"] / result["bf16"]["best_s"], 2)
    return result


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _import_child() -> dict[str, Any]:
    import torch  # noqa: F401 (what is measured)

    return {"peak_rss_mb": round(_peak_rss_mb(), 1)}


# ---------------------------------------------------------------------------- parent


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _run_child(python: str, args: list[str], threads: int) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-m", "bench.torch_build_bench", "--child", *args],
        cwd=ROOT,
        env=_child_env(threads),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :])
    raise RuntimeError(f"{python} {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


def _launch_seconds(python: str, code: str, count: int, threads: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run(
            [python, "-c", code],
            env=_child_env(threads),
            capture_output=True,
            timeout=IMPORT_TIMEOUT_S,
            check=True,
        )
        times.append(time.perf_counter() - start)
    return times


def measure_import(python: str, count: int, threads: int) -> dict[str, Any]:
    bare = _launch_seconds(python, "pass", count, threads)
    torch = _launch_seconds(python, "import torch", count, threads)
    return {
        "python_only_best_s": round(min(bare), 3),
        "import_torch_best_s": round(min(torch), 3),
        "import_torch_median_s": round(statistics.median(torch), 3),
        "import_torch_all_s": [round(v, 3) for v in torch],
        **_run_child(python, ["import"], threads),
    }


def measure(python: str, args: argparse.Namespace) -> dict[str, Any]:
    result = {"python": python, "import": measure_import(python, args.imports, args.threads)}
    unet_args = ["unet", str(args.size), str(args.repeats), str(args.threads)]
    result["unet"] = _run_child(python, unet_args, args.threads)
    return result


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one interpreter: best of bests, median of every timed value."""
    first = runs[0]
    merged = {"python": first["python"], "build": first["unet"]["build"], "rounds": len(runs)}
    imports = [v for run in runs for v in run["import"]["import_torch_all_s"]]
    merged["import_torch_best_s"] = round(min(imports), 3)
    merged["import_torch_median_s"] = round(statistics.median(imports), 3)
    merged["python_only_best_s"] = min(run["import"]["python_only_best_s"] for run in runs)
    merged["import_peak_rss_mb"] = max(run["import"]["peak_rss_mb"] for run in runs)
    merged["gflop_per_step"] = first["unet"]["gflop_per_step"]
    for name in ("fp32", "bf16"):
        values = [v for run in runs for v in run["unet"][name]["all_s"]]
        merged[f"{name}_best_s"] = round(min(values), 3)
        merged[f"{name}_median_s"] = round(statistics.median(values), 3)
        merged[f"{name}_gflops"] = round(merged["gflop_per_step"] / min(values), 1)
    merged["bf16_speedup"] = round(merged["fp32_best_s"] / merged["bf16_best_s"], 2)
    merged["runs"] = runs
    return merged


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("torch", lambda r: r["build"]["torch"]),
        (
            "CPU capability / native bf16",
            lambda r: f"{r['build']['cpu_capability']} / {r['build']['native_bf16']}",
        ),
        ("oneDNN / MKL", lambda r: f"{r['build']['onednn']} / {r['build']['mkl']}"),
        ("torch (+GPU libs) on disk, MB", lambda r: f"{r['build']['torch_install_mb']:.0f}"),
        ("python -c pass, best s", lambda r: f"{r['python_only_best_s']:.3f}"),
        (
            "import torch, best / median s",
            lambda r: f"{r['import_torch_best_s']:.3f} / {r['import_torch_median_s']:.3f}",
        ),
        ("import torch, peak RSS MB", lambda r: f"{r['import_peak_rss_mb']:.0f}"),
        (
            "UNet fp32, best / median s",
            lambda r: f"{r['fp32_best_s']:.3f} / {r['fp32_median_s']:.3f}",
        ),
        (
            "UNet bf16, best / median s",
            lambda r: f"{r['bf16_best_s']:.3f} / {r['bf16_median_s']:.3f}",
        ),
        ("fp32 / bf16 GFLOP/s", lambda r: f"{r['fp32_gflops']:.0f} / {r['bf16_gflops']:.0f}"),
        ("bf16 speed-up over fp32", lambda r: f"{r['bf16_speedup']:.2f}x"),
    ]
    if len(results) > 1:
        base = results[0]
        rows += [
            (
                f"fp32 speed vs {base['build']['torch']}",
                lambda r: f"{base['fp32_best_s'] / r['fp32_best_s']:.2f}x",
            ),
            (
                f"bf16 speed vs {base['build']['torch']}",
                lambda r: f"{base['bf16_best_s'] / r['bf16_best_s']:.2f}x",
            ),
        ]
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, cell in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell(r):>22}" for r in results))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, *rest = argv[1:]
        if kind == "unet":
            size, repeats, threads = (int(v) for v in rest)
            payload = _unet_child(size, repeats, threads)
        else:
            payload = _import_child()
        print(CHILD_MARK + json.dumps(payload), flush=True)
        return 0

    parser = argparse.ArgumentParser(prog="python -m bench.torch_build_bench", description=__doc__)
    parser.add_argument("--python", action="append", help="interpreter to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed UNet steps per dtype")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--imports", type=int, default=5, help="launches of import torch")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    pythons = args.python or [sys.executable]
    runs: dict[str, list[dict[str, Any]]] = {python: [] for python in pythons}
    for round_index in range(args.rounds):
        for python in pythons:
            print(f"round {round_index + 1}/{args.rounds}: {python}", file=sys.stderr, flush=True)
            runs[python].append(measure(python, args))
    results = [_merge(runs[python]) for python in pythons]
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

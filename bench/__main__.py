"""``python -m bench [--quick]``: run Sandstorm's benchmarks, print a table, write JSON.

Results go to ``bench/results/latest.json``. ``python -m bench --full [--quick] [--comfyui
DIR]`` runs the full-size SD1.5 comparison instead (Sandstorm, bare diffusers, ComfyUI; see
``bench/full_bench.py``) and writes ``bench/results/full.json`` (``full-quick.json``).

Every figure is measured side by side in this one run (ratios, medians), so runs on
different machines can be compared by their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from desktop.engine.environment import apply_defaults  # noqa: E402 (needs sys.path above)

apply_defaults()
RESULTS = ROOT / "bench" / "results"

GOALS = {
    "engine_overhead_ratio": "≤ 1.03",
    "preview_cost_ratio": "≤ 1.02",
    "gui_max_gap_ms": "≤ 30",
    "window_seconds": "≤ 1.0",
    "second_job_loads": "0",
    "second_job_first_preview_seconds": "≤ 0.2",
    "rss_growth_percent": "≤ 2",
    "gallery_search_10k_ms": "—",
    "gallery_set_root_cold_max_gap_ms": "≤ 30",
    "gallery_set_root_warm_max_gap_ms": "≤ 30",
    "gallery_undo_delete_max_gap_ms": "≤ 30",
    "gallery_first_screen_thumbnails_ms": "≤ 300",
}


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _suites(quick: bool) -> list[tuple[str, Callable[[], dict]]]:
    from bench import engine_bench

    model, size = engine_bench.bench_model()
    suites: list[tuple[str, Callable[[], dict]]] = [
        ("engine", lambda: engine_bench.engine_overhead(model, size, rounds=3 if quick else 9)),
        ("second job", lambda: engine_bench.second_job(model, size)),
        ("discovery", engine_bench.discovery),
        ("memory", lambda: engine_bench.memory(model, size, generations=20 if quick else 100)),
    ]
    n = 2000 if quick else 10_000
    suites += [
        ("startup", lambda: _suite("bench.startup_bench", repeats=3 if quick else 5)),
        ("gui", lambda: _suite("bench.gui_bench", model=model, size=size)),
        ("gallery", lambda: _suite("bench.gallery_bench", n=n)),
        ("gallery ui", lambda: _suite("bench.gallery_ui_bench", n=n)),
    ]
    return suites


def _suite(module: str, **kwargs: object) -> dict:
    """Import a benchmark module only when it runs (the GUI ones pull in Qt)."""
    import importlib

    return importlib.import_module(module).run(**kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short subset (~3 minutes)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="full-size SD1.5 against bare diffusers (and ComfyUI): 512², 20 steps; "
        "with --quick 256², 4 steps",
    )
    parser.add_argument(
        "--comfyui", type=Path, default=None, help="with --full: a ComfyUI folder to run too"
    )
    parser.add_argument(
        "--comfyui-python",
        default=None,
        help="with --comfyui: the python of ComfyUI's venv (default /tmp/comfy-venv/bin/python)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="with --full: jobs per system")
    args = parser.parse_args(argv)
    if args.full:
        return _full(args)
    if args.comfyui is not None:
        parser.error("--comfyui goes with --full")
    results: dict = {"machine": machine(), "quick": args.quick, "started": time.time()}
    for name, suite in _suites(args.quick):
        print(f"-- {name} …", flush=True)
        start = time.perf_counter()
        try:
            results.update(suite())
        except Exception as exc:  # a broken suite must not hide the others' numbers
            results[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
        print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    return 0


def _full(args: argparse.Namespace) -> int:
    from bench import full_bench

    results: dict = {"machine": machine(), "quick": args.quick, "started": time.time()}
    print("-- full-size SD1.5 …", flush=True)
    results.update(
        full_bench.run(
            quick=args.quick,
            comfyui=args.comfyui,
            jobs=args.jobs,
            comfy_python=args.comfyui_python,
            log=lambda text: print(text, flush=True),
        )
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "full-quick.json" if args.quick else "full.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    return 0


def table(results: dict) -> str:
    """Markdown table of every numeric result, with the goal where there is one."""
    lines = ["| metric | value | goal |", "|---|---|---|"]
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key == "started":
            continue
        lines.append(f"| {key} | {value:.4g} | {GOALS.get(key, '')} |")
    errors = [f"- {k}: {v}" for k, v in results.items() if k.endswith("_error")]
    return "\n".join(lines + (["", *errors] if errors else []))


if __name__ == "__main__":
    sys.exit(main())

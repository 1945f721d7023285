"""``sandstorm generate``: run one request headless and write PNGs with metadata."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from desktop.cli import fail
from desktop.engine.errors import SandstormError
from desktop.engine.schema import FieldInfo

#: Where a setting's value comes from when its flag is not given: the model's defaults.
_MODEL_DEFAULTS = {
    "sampler": "sampler",
    "steps": "steps",
    "cfg_scale": "cfg_scale",
    "width": "width",
    "height": "height",
}


def add_parser(sub: Any) -> None:
    """``generate``: one flag per request setting (from its declaration), plus output flags."""
    from desktop.engine.devices import DEVICE_CHOICES_HELP, MEMORY_MODES, PRECISION_CHOICES

    p = sub.add_parser("generate", help="generate images from a prompt, without the window")
    for info in cli_fields():
        flag = info.spec.cli_flag(info.name)
        assert flag is not None
        help_text = info.spec.help or info.label
        allowed = info.spec.allowed()
        if allowed is not None:
            help_text += f" ({', '.join(allowed)})"
        if info.spec.model_default:
            help_text += "; default: the model's"
        elif info.default not in (None, ""):
            help_text += f"; default: {info.default}"
        p.add_argument(
            flag,
            dest=info.name,
            metavar=info.kind.upper() if info.kind != "text" else "TEXT",
            type=_parser_for(info),
            default=None,
            required=info.name == "prompt",
            help=help_text,
        )
    inpaint = p.add_argument_group("inpainting", "repaint part of --init-image")
    _add_part_flags(inpaint, mask_fields(), "mask")
    control = p.add_argument_group("control layers", "steer the picture with control images")
    control.add_argument(
        "--control",
        dest="controls",
        nargs="+",
        action="append",
        metavar="ARG",
        default=None,
        help="TYPE IMAGE [strength=1] [start=0] [end=1] [model=NAME] [resize=MODE]; repeat "
        "for several layers. TYPE: canny, scribble, lineart, tile, inpaint, control map "
        "(quote it); the ControlNet suggested for TYPE is used unless model= names one",
    )
    control.add_argument(
        "--reference",
        dest="references",
        nargs="+",
        action="append",
        metavar="ARG",
        default=None,
        help="IMAGE [weight=1] [model=NAME]: a reference image steering the picture through "
        "an IP-Adapter (models/ipadapter, its image encoder in models/clip_vision); repeat "
        "for several; the adapter suggested for the model is used unless model= names one",
    )
    p.add_argument(
        "--hires",
        dest="hires",
        nargs="*",
        metavar="KEY=VALUE",
        default=None,
        help="hires fix: generate at --width/--height, upscale, then a second pass; "
        "[scale=2] [upscaler=Latent|Lanczos|MODEL] [steps=0 (same as --steps)] [denoise=0.5]",
    )
    outpaint = p.add_argument_group("outpainting", "grow --init-image's canvas and paint the rest")
    outpaint.add_argument(
        "--expand",
        dest="expand_sides",
        metavar="PIXELS",
        default=None,
        help="pixels to add: 256 (every side), 0,256,0,0 (left, right, top, bottom) or "
        "right=256,bottom=128",
    )
    _add_part_flags(outpaint, expand_fields(), "expand")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: gallery)")
    p.add_argument("--device", default="auto", type=_device, help=DEVICE_CHOICES_HELP)
    compute = p.add_argument_group(
        "performance", "default: the values in the app's settings (auto: chosen for the device)"
    )
    compute.add_argument(
        "--dtype",
        choices=PRECISION_CHOICES,
        default=None,
        help="number format of the UNet and text encoders",
    )
    compute.add_argument(
        "--vae-dtype", choices=PRECISION_CHOICES, default=None, help="number format of the VAE"
    )
    compute.add_argument(
        "--memory-mode",
        choices=MEMORY_MODES,
        default=None,
        help="GPU memory saving: off, tiling (VAE tiles, attention slicing), offload, sequential",
    )
    compute.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the UNet with torch.compile (the first job compiles; kernels are cached)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of paths")
    p.set_defaults(func=run)


def cli_fields() -> list[FieldInfo]:
    """The request settings that have a command-line flag, in declaration order."""
    from desktop.engine.request import request_fields

    return [
        info
        for info in request_fields()
        if info.kind not in ("part", "parts") and info.spec.cli_flag(info.name) is not None
    ]


def _add_part_flags(group: Any, fields: list[FieldInfo], prefix: str) -> None:
    """One flag per declared setting of a part (dest ``<prefix>_<name>``)."""
    for info in fields:
        flag = info.spec.cli_flag(info.name)
        assert flag is not None
        text = info.spec.help or info.label
        if info.kind == "bool":
            group.add_argument(
                flag,
                dest=f"{prefix}_{info.name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{text}; default: {'on' if info.default else 'off'}",
            )
            continue
        allowed = info.spec.allowed()
        if allowed is not None:
            text += f" ({', '.join(allowed)})"
        if info.default not in (None, ""):
            text += f"; default: {info.default}"
        group.add_argument(
            flag,
            dest=f"{prefix}_{info.name}",
            metavar="FILE" if info.name == "image" else info.kind.upper(),
            type=_parser_for(info),
            default=None,
            help=text,
        )


def expand_fields() -> list[FieldInfo]:
    """Outpainting's settings that have their own flag (the sides come in ``--expand``)."""
    from desktop.engine.parts import ExpandSpec
    from desktop.engine.schema import fields_of

    return [info for info in fields_of(ExpandSpec) if info.spec.cli_flag(info.name)]


def _expand(args: argparse.Namespace) -> Any:
    """The request's outpainting from ``--expand`` and its options, or None without it."""
    from desktop.engine.errors import RequestError
    from desktop.engine.parts import ExpandSpec, parse_expand

    given = {
        info.name: getattr(args, f"expand_{info.name}")
        for info in expand_fields()
        if getattr(args, f"expand_{info.name}", None) is not None
    }
    sides = getattr(args, "expand_sides", None)
    if sides is None:
        if given:
            flags = ", ".join(
                info.spec.cli_flag(info.name) or ""
                for info in expand_fields()
                if info.name in given
            )
            raise RequestError(f"{flags} need --expand PIXELS (how far to grow the picture).")
        return None
    if getattr(args, "init_image", None) is None:
        raise RequestError("--expand needs --init-image: the picture to grow.")
    return ExpandSpec(**parse_expand(sides), **given)


def _controls(args: argparse.Namespace) -> Any:
    """The request's control layers from each ``--control TYPE IMAGE [key=value ...]``."""
    from desktop.engine.errors import RequestError
    from desktop.engine.parts import ControlUnit
    from desktop.engine.schema import fields_of, parse_text

    given = getattr(args, "controls", None) or []
    fields = {info.name: info for info in fields_of(ControlUnit)}
    options = [name for name in fields if name not in ("type", "image")]
    units = []
    for index, items in enumerate(given, start=1):
        if len(items) < 2:
            raise RequestError(
                f"--control {index} needs a type and an image: --control scribble sketch.png"
            )
        values: dict[str, Any] = {"type": items[0], "image": items[1]}
        for item in items[2:]:
            name, sep, text = item.partition("=")
            if not sep or name not in options:
                raise RequestError(
                    f"--control {index}: cannot read “{item}”; give "
                    + ", ".join(f"{o}=…" for o in options)
                )
            try:
                values[name] = parse_text(fields[name], text)
            except ValueError as exc:
                raise RequestError(f"--control {index}: {fields[name].label}: {exc}") from exc
        units.append(ControlUnit(**values))
    return tuple(units) or None


def _references(args: argparse.Namespace) -> Any:
    """The request's reference images from each ``--reference IMAGE [key=value ...]``."""
    from desktop.engine.errors import RequestError
    from desktop.engine.parts import ReferenceImage
    from desktop.engine.schema import fields_of, parse_text

    given = getattr(args, "references", None) or []
    fields = {info.name: info for info in fields_of(ReferenceImage)}
    options = [name for name in fields if name != "image"]
    refs = []
    for index, items in enumerate(given, start=1):
        values: dict[str, Any] = {"image": items[0]}
        if "=" in items[0] and items[0].partition("=")[0] in options:
            raise RequestError(
                f"--reference {index} needs an image first: --reference photo.png weight=0.8"
            )
        for item in items[1:]:
            name, sep, text = item.partition("=")
            if not sep or name not in options:
                raise RequestError(
                    f"--reference {index}: cannot read “{item}”; give "
                    + ", ".join(f"{o}=…" for o in options)
                )
            try:
                values[name] = parse_text(fields[name], text)
            except ValueError as exc:
                raise RequestError(f"--reference {index}: {fields[name].label}: {exc}") from exc
        refs.append(ReferenceImage(**values))
    return tuple(refs) or None


def _hires(args: argparse.Namespace) -> Any:
    """The request's hires pass from ``--hires [key=value ...]`` (None without the flag)."""
    from desktop.engine.errors import RequestError
    from desktop.engine.parts import HiresSpec
    from desktop.engine.schema import fields_of, parse_text

    given = getattr(args, "hires", None)
    if given is None:
        return None
    fields = {info.name: info for info in fields_of(HiresSpec)}
    values: dict[str, Any] = {}
    for item in given:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise RequestError(
                f"--hires: cannot read “{item}”; give " + ", ".join(f"{o}=…" for o in fields)
            )
        try:
            values[name] = parse_text(fields[name], text)
        except ValueError as exc:
            raise RequestError(f"--hires: {fields[name].label}: {exc}") from exc
    return HiresSpec(**values)


def mask_fields() -> list[FieldInfo]:
    """The mask's settings (``--mask FILE`` and how it is used), in declaration order."""
    from desktop.engine.parts import MaskSpec
    from desktop.engine.schema import fields_of

    return [info for info in fields_of(MaskSpec) if info.spec.cli_flag(info.name)]


def _mask(args: argparse.Namespace) -> Any:
    """The request's mask from the inpainting flags, or None without ``--mask``."""
    from desktop.engine.errors import RequestError
    from desktop.engine.parts import MaskSpec

    given = {
        info.name: getattr(args, f"mask_{info.name}", None)
        for info in mask_fields()
        if getattr(args, f"mask_{info.name}", None) is not None
    }
    if "image" not in given:
        if given:
            flags = ", ".join(
                info.spec.cli_flag(info.name) or "" for info in mask_fields() if info.name in given
            )
            raise RequestError(f"{flags} need --mask FILE (the part of --init-image to repaint).")
        return None
    if getattr(args, "init_image", None) is None:
        raise RequestError("--mask needs --init-image: the picture whose masked part to repaint.")
    return MaskSpec(**given)


def _parser_for(info: FieldInfo) -> Any:
    from desktop.engine.schema import parse_text

    def parse(text: str) -> Any:
        try:
            return parse_text(info, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{info.label}: {exc}") from exc

    parse.__name__ = info.kind  # argparse names the type in its error message
    return parse


def _device(text: str) -> str:
    from desktop.engine.devices import parse_device

    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def compute_options(args: argparse.Namespace) -> Any:
    """The performance options: each flag given overrides the app's saved setting."""
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.settings import load_settings

    saved = load_settings().compute_options()
    flags = {
        "precision": args.dtype,
        "vae_precision": args.vae_dtype,
        "memory_mode": args.memory_mode,
        "compile": args.compile,
    }
    values = {
        name: getattr(saved, name) if value is None else value for name, value in flags.items()
    }
    return ComputeOptions(**values)


def build_request(args: argparse.Namespace) -> Any:
    """Make the request from the flags; settings not given take the model's defaults (for
    those declared ``model_default``) or the declared default."""
    from desktop.engine.defaults import defaults_for
    from desktop.engine.models import find_model
    from desktop.engine.request import GenerationRequest

    info = find_model(args.model or "")
    defaults = defaults_for(info)
    values: dict[str, Any] = {}
    for field in cli_fields():
        value = getattr(args, field.name, None)
        if value is None and field.spec.model_default and field.name in _MODEL_DEFAULTS:
            value = getattr(defaults, _MODEL_DEFAULTS[field.name])
        if value is not None:
            values[field.name] = value
    values["model"] = str(info.path) if args.model else ""
    parts = {
        "mask": _mask(args),
        "expand": _expand(args),
        "controls": _controls(args),
        "references": _references(args),
        "hires": _hires(args),
    }
    request = GenerationRequest.from_values(values)
    if any(parts.values()):
        request = request.replace(**{name: part for name, part in parts.items() if part})
    return request


class _TerminalProgress:
    """A one-line progress bar on a terminal; silent when output is not a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def status(self, text: str) -> None:
        if self.tty:
            print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)

    def step(self, step: int, total: int, elapsed: float) -> None:
        if not self.tty or total <= 0:
            return
        width = 30
        done = int(width * step / total)
        rate = step / elapsed if elapsed > 0 else 0.0
        bar = "#" * done + "-" * (width - done)
        print(f"\r[{bar}] {step}/{total} {rate:.1f} it/s ", end="", file=sys.stderr, flush=True)
        if step == total:
            print(file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from desktop.engine.backend import LocalBackend
    from desktop.engine.progress import Progress
    from desktop.engine.results import save_results

    bar = _TerminalProgress()

    class CliProgress(Progress):
        def set_status(self, text: str) -> None:
            bar.status(text)

        def set_progress(self, update: Any) -> None:
            bar.step(update.step, update.total, update.elapsed)

        def warn(self, text: str) -> None:
            print(f"sandstorm: warning: {text}", file=sys.stderr)

    try:
        request = build_request(args)
        backend = LocalBackend(device=args.device, options=compute_options(args))
        result = backend.generate(request, CliProgress(job_id="cli", previews=False))
        saved = save_results(result.images, result.model, args.out)
    except SandstormError as exc:
        return fail(str(exc))
    paths = [str(item.path) for item in saved]
    if args.json:
        payload = {
            "paths": paths,
            "request": result.request.to_dict(),
            "model": result.model.name,
            "dtype": backend.engine.plan_for(result.model.family).dtype,
        }
        print(json.dumps(payload, indent=2))
    else:
        print("\n".join(paths))
    return 0

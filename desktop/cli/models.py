"""``sandstorm models``: list discovered models, usable or not, with the reason."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list the models Sandstorm can find")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from desktop.engine.models import scan

    models = scan()
    if args.json:
        rows = [
            {
                "name": m.name,
                "family": m.family,
                "label": m.label,
                "format": m.format,
                "path": str(m.path),
                "usable": m.usable,
                "reason": m.reason,
                "prediction_type": m.prediction_type,
            }
            for m in models
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not models:
        print("No models found. Put checkpoints in models/checkpoints.")
    for m in models:
        state = "" if m.usable else f"  [unusable: {m.reason}]"
        print(f"{m.name:<40} {m.label:<18} {m.path}{state}")
    return 0

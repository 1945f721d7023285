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
    from desktop.engine.model_folders import checkpoint_search_folders
    from desktop.engine.models import scan
    from desktop.engine.settings import load_settings

    # The same folders as the window: Sandstorm's own, then the user's extra sources.
    models = scan(checkpoint_search_folders(load_settings().extra_model_folders))
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

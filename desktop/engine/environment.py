"""Process environment defaults, set in one place before torch or the Hub libraries load.

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP workers spin by default; on a machine whose cores
  are busy (a desktop running other apps) that made CPU generation up to 150x slower, and
  the spinning threads compete with the GUI thread. Sleeping waits cost nothing measurable.
  OpenMP reads it once, when torch loads.
* ``HF_HUB_OFFLINE=1``: Sandstorm never downloads while loading a model; every config it
  needs ships in ``resources/``. huggingface_hub reads it once, on import
  (``desktop.engine.loader`` also forces it for copies imported earlier). Downloads the
  user asks for do not go through the Hub libraries, so they are not affected.

Defaults only: a value already in the environment wins, so a user or a test can override
either. This module is import-cheap (standard library only) so that entry points can call
``apply_defaults()`` first thing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: Variable -> default value; ``apply_defaults`` sets each one that is not set yet.
DEFAULTS: dict[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
}


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every variable of ``DEFAULTS`` that ``environ`` (default: ``os.environ``) lacks.

    Returns the variables this call set (empty when all were already there). Call it before
    torch, diffusers, transformers or huggingface_hub is imported; later it is too late for
    the values those libraries read once.
    """
    target = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    for name, value in DEFAULTS.items():
        if name not in target:
            target[name] = value
            applied[name] = value
    return applied

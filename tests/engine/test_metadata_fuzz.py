"""Malformed metadata and random request values never crash (deterministic fuzzing)."""

from __future__ import annotations

import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from desktop.engine.errors import RequestError
from desktop.engine.metadata import (
    ImageMetadata,
    format_parameters,
    metadata_from_chunks,
    read_metadata,
)
from desktop.engine.request import GenerationRequest
from desktop.engine.samplers import SAMPLERS, SCHEDULES

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
_param_keys = st.sampled_from(
    [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model",
        "Model hash",
        "VAE",
        "Denoising strength",
        "Hires upscale",
    ]
)
_param_values = st.one_of(
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from([*list(SAMPLERS), "DPM++ 2M Karras", "512x512", "0x0", "9x99999", '"a, b"']),
)


@st.composite
def _infotext(draw: st.DrawFn) -> str:
    prompt = draw(st.text(max_size=40))
    negative = draw(st.one_of(st.just(""), st.text(max_size=20)))
    pairs = draw(st.lists(st.tuples(_param_keys, _param_values), min_size=0, max_size=8))
    line = ", ".join(f"{k}: {v}" for k, v in pairs)
    neg = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{neg}\n{line}"


@st.composite
def _comfy_graph(draw: st.DrawFn) -> str:
    node_ids = [str(i) for i in range(draw(st.integers(1, 6)))]
    link = st.tuples(st.sampled_from([*node_ids, "99"]), st.integers(0, 2)).map(list)
    value = st.one_of(_json_leaf, link)
    kinds = st.sampled_from(
        [
            "KSampler",
            "KSamplerAdvanced",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "CheckpointLoaderSimple",
            "LoraLoader",
            "PrimitiveNode",
            5,
            None,
        ]
    )
    keys = st.sampled_from(
        [
            "seed",
            "noise_seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise",
            "model",
            "positive",
            "negative",
            "latent_image",
            "text",
            "width",
            "height",
            "ckpt_name",
            "value",
        ]
    )
    graph = {
        node_id: {
            "class_type": draw(kinds),
            "inputs": draw(st.dictionaries(keys, value, max_size=8)),
        }
        for node_id in node_ids
    }
    return json.dumps(graph)


_chunk_text = st.one_of(
    st.text(max_size=80),
    _json.map(json.dumps),
    _infotext(),
    _comfy_graph(),
)
_chunks = st.dictionaries(
    st.sampled_from(
        [
            "sandstorm",
            "parameters",
            "prompt",
            "workflow",
            "invokeai_metadata",
            "UserComment",
            "comment",
        ]
    ),
    _chunk_text,
    max_size=4,
)


def _check(meta: ImageMetadata) -> None:
    assert meta.source in ("sandstorm", "a1111", "comfyui", "invokeai", "none")
    # The reader's last-resort net must only ever catch malformed JSON or invalid requests;
    # anything else is a reader bug that the net would otherwise hide.
    for problem in meta.extras.get("problems", []):
        kind = problem.removeprefix("sandstorm chunk unreadable: ").split(":")[0]
        assert kind in ("JSONDecodeError", "RequestError"), problem
    if meta.request is not None:
        # Whatever was read is a valid request that can be written back out.
        assert isinstance(format_parameters(meta.request), str)


@FUZZ
@given(chunks=_chunks)
def test_malformed_chunks_never_raise(chunks: dict[str, str]) -> None:
    _check(metadata_from_chunks(chunks))


@FUZZ
@given(
    graph=st.one_of(_comfy_graph(), _json.map(json.dumps)),
    wrap=st.sampled_from(["sandstorm_request", "invokeai_metadata", "workflow"]),
)
def test_malformed_json_structures_never_raise(graph: str, wrap: str) -> None:
    if wrap == "sandstorm_request":
        chunks = {"sandstorm": json.dumps({"version": 1, "request": json.loads(graph)})}
    else:
        chunks = {wrap: graph}
    _check(metadata_from_chunks(chunks))


def _png(chunks: dict[str, str]) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


_SAMPLE_PNG = _png({"parameters": "p\nSteps: 3, Sampler: Euler, Seed: 1", "prompt": "{}"})


@FUZZ
@given(
    cut=st.integers(0, len(_SAMPLE_PNG)),
    flips=st.lists(
        st.tuples(st.integers(0, len(_SAMPLE_PNG) - 1), st.integers(1, 255)), max_size=4
    ),
    junk=st.binary(max_size=64),
)
def test_damaged_files_never_raise(cut: int, flips: list[tuple[int, int]], junk: bytes) -> None:
    data = bytearray(_SAMPLE_PNG[:cut])
    for index, xor in flips:
        if index < len(data):
            data[index] ^= xor
    meta = read_metadata(bytes(data) + junk)
    _check(meta)
    if meta.source == "none" and meta.request is None:
        assert isinstance(meta.error, str)


def test_compressed_bomb_chunk_is_read_safely() -> None:
    # A zTXt chunk that inflates to many megabytes must not take the reader down.
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a" * 5_000_000 + "\nSteps: 1, Sampler: Euler, Seed: 1", zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    meta = read_metadata(buffer.getvalue())
    _check(meta)
    # PIL refuses the chunk; the reader's own bounded inflate still finds a (cut) prompt.
    assert meta.error == ""
    assert meta.request is not None
    assert meta.request.prompt == "a" * 100_000


# -- GenerationRequest validation ------------------------------------------------------------


def _mostly(valid: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values nine times in ten, so that whole requests are often valid too."""
    return st.integers(0, 9).flatmap(lambda i: valid if i < 9 else other)


_sizes = st.integers(4, 512).map(lambda n: n * 8)
_FIELD_VALUES = {
    "prompt": _mostly(st.text(max_size=30), _json_leaf),
    "negative_prompt": _mostly(st.text(max_size=10), _json_leaf),
    "model": _mostly(st.text(max_size=10), st.one_of(st.none(), st.integers())),
    "vae": _mostly(st.text(max_size=10), st.none()),
    "sampler": _mostly(st.sampled_from(list(SAMPLERS)), st.one_of(st.text(max_size=8), st.none())),
    "schedule": _mostly(
        st.just("Automatic"), st.one_of(st.sampled_from(SCHEDULES), st.text(max_size=8))
    ),
    "steps": _mostly(st.integers(1, 150), st.one_of(st.integers(-5, 200), _json_leaf)),
    "cfg_scale": _mostly(st.floats(0, 30), st.one_of(st.floats(-5, 40), _json_leaf)),
    "seed": _mostly(st.integers(-1, 2**32 - 17), st.one_of(st.integers(-3, 2**33), _json_leaf)),
    "width": _mostly(_sizes, st.one_of(st.integers(0, 5000), _json_leaf)),
    "height": _mostly(_sizes, st.one_of(st.integers(0, 5000), _json_leaf)),
    "batch_size": _mostly(st.integers(1, 16), st.one_of(st.integers(-1, 20), _json_leaf)),
    "init_image": _mostly(st.none(), st.one_of(st.text(max_size=10), st.integers())),
    "strength": _mostly(st.floats(0.5, 1), st.one_of(st.floats(-1, 2), _json_leaf)),
}


@FUZZ
@given(
    kwargs=st.fixed_dictionaries(
        {"prompt": _FIELD_VALUES["prompt"]},
        optional={name: strategy for name, strategy in _FIELD_VALUES.items() if name != "prompt"},
    )
)
def test_random_requests_are_valid_or_raise_request_error(kwargs: dict) -> None:
    try:
        request = GenerationRequest(**kwargs)
    except RequestError as exc:
        assert str(exc).endswith((".", ")")), str(exc)
        return
    # A request that constructs is usable: it round-trips and its values are in range.
    assert GenerationRequest.from_json(request.to_json()) == request
    assert 1 <= request.steps <= 150
    assert math.isfinite(request.cfg_scale)
    assert request.width % 8 == 0 and request.height % 8 == 0
    meta = metadata_from_chunks({"parameters": format_parameters(request.resolved())})
    assert meta.request is not None


def test_integer_beyond_float_range_raises_request_error() -> None:
    with pytest.raises(RequestError):
        GenerationRequest(prompt="x", cfg_scale=10**400)

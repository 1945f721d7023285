"""The built-in model's data generator, tokenizer and pixel scorer."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from desktop.training import data, score
from desktop.training.tokenizer import load_tokenizer, write_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(write_tokenizer(tmp_path_factory.mktemp("tok"), data.VOCABULARY))


def test_every_domain_word_is_one_token(tokenizer) -> None:
    for word in data.VOCABULARY:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{word!r} -> {tokenizer.convert_ids_to_tokens(ids)}"
        assert ids[0] != tokenizer.unk_token_id


def test_captions_use_only_the_vocabulary(tokenizer) -> None:
    rng = random.Random(0)
    vocab = set(data.VOCABULARY) | {","}
    for _ in range(300):
        text = data.caption(data.random_scene(rng), rng)
        tokens = tokenizer.tokenize(text)
        assert len(tokens) == len(text.replace(",", " ,").split())
        assert {t.removesuffix("</w>") for t in tokens} <= vocab
        assert len(tokenizer(text).input_ids) <= tokenizer.model_max_length


def test_tokenizer_folder_loads_with_a_model_max_length(tmp_path: Path) -> None:
    folder = write_tokenizer(tmp_path / "tok", ["circle", "circles"])
    tok = load_tokenizer(folder)
    assert tok.model_max_length == 32
    assert len(tok("circles circle", add_special_tokens=False).input_ids) == 2


def test_training_scenes_never_contain_a_held_out_combination() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        scene = data.random_scene(rng, two_shape_fraction=0.3)
        for spec in scene.shapes:
            assert (spec.colour, spec.shape, scene.background) not in data.HELD_OUT
            assert spec.colour != scene.background


def test_evaluation_cases_are_held_out_and_balanced() -> None:
    cases = data.evaluation_cases(64)
    assert len({c.prompt for c in cases}) == 64
    for case in cases:
        t = case.target
        assert (t.colour, t.shape, case.scene.background) in data.HELD_OUT
    positions = Counter(c.target.position for c in cases)
    assert set(positions) == set(data.POSITIONS) and min(positions.values()) >= 6
    assert Counter(c.target.size for c in cases) == {"small": 32, "big": 32}


def test_moved_scene_differs_only_in_position() -> None:
    rng = random.Random(2)
    for _ in range(200):
        scene = data.random_scene(rng, two_shape_fraction=0.5)
        other = data.moved(scene, rng)
        assert other.background == scene.background
        for a, b in zip(scene.shapes, other.shapes, strict=True):
            assert (a.shape, a.colour, a.size) == (b.shape, b.colour, b.size)
        assert [s.position for s in scene.shapes] != [s.position for s in other.shapes]


def test_scorer_reads_the_generators_own_pictures() -> None:
    rng = random.Random(3)
    totals: Counter[str] = Counter()
    count = 400
    for _ in range(count):
        scene = data.random_scene(rng, two_shape_fraction=0.0)
        totals.update(k for k, ok in score.score(data.render(scene, rng), scene).items() if ok)
    for name in score.ATTRIBUTES:
        assert totals[name] / count >= 0.99, (name, totals[name])


def test_scorer_reports_a_blank_picture_as_no_shape() -> None:
    blank = data.render(data.Scene("green", ()))
    reading = score.read_image(blank)
    assert reading.background == "green"
    assert reading.shape is None and reading.position is None


def test_pictures_are_64_pixels_and_exact_without_jitter() -> None:
    scene = data.Scene("black", (data.ShapeSpec("square", "white", "big", "center"),))
    image = data.render(scene)
    assert image.size == (64, 64)
    assert image.getpixel((32, 32)) == data.COLOURS["white"]
    assert image.getpixel((1, 1)) == data.COLOURS["black"]

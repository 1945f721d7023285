"""The built-in model's world: procedurally drawn, captioned pictures of simple shapes.

A scene is one or two coloured shapes on a plain background. Everything here is
deterministic given a ``random.Random``, so training data, held-out evaluation prompts and
tests can all be reproduced from a seed.

Shapes of one size class are drawn with the same *area* (a square and a triangle as large as
the circle), so the evaluation can tell size from the pixel area alone and shape type from how
the shape fills its bounding box (triangle 1/2, circle π/4, square 1).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

IMAGE_SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (250, 230, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 6.0, "big": 11.0}  # radius of the equal-area circle
_THIRDS = (0.25, 0.5, 0.75)
# Position name -> (x, y) as fractions of the image side; the shape's centroid goes there.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (_THIRDS[0], _THIRDS[0]),
    "top": (_THIRDS[1], _THIRDS[0]),
    "top right": (_THIRDS[2], _THIRDS[0]),
    "left": (_THIRDS[0], _THIRDS[1]),
    "center": (_THIRDS[1], _THIRDS[1]),
    "right": (_THIRDS[2], _THIRDS[1]),
    "bottom left": (_THIRDS[0], _THIRDS[2]),
    "bottom": (_THIRDS[1], _THIRDS[2]),
    "bottom right": (_THIRDS[2], _THIRDS[2]),
}

# Ways of saying where a shape is; "{p}" is the position name.
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "edge": ("on the {p}", "at the {p}", "{p}", "on the {p} side"),
    "center": ("in the center", "at the center", "in the middle", "centered"),
    "corner": ("in the {p} corner", "at the {p}", "{p}", "in the {p}"),
}
_BACKGROUND_PHRASES = ("{b} background", "on a {b} background", "on {b}", "against {b}")
_FILLER_WORDS = ("a", "an", "and", "with", "of", "picture", "image", "shape", "drawing")

# Word-level vocabulary of the domain: every word a caption can contain.
VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        set(COLOURS)
        | set(SHAPES)
        | set(SIZES)
        | {word for name in POSITIONS for word in name.split()}
        | {
            word
            for phrases in (*_POSITION_PHRASES.values(), _BACKGROUND_PHRASES)
            for phrase in phrases
            for word in phrase.replace("{p}", "").replace("{b}", "").split()
        }
        | set(_FILLER_WORDS)
        | {"large", "tiny"}
    )
)
SYNONYMS = {"big": ("big", "large"), "small": ("small", "tiny")}


@dataclass(frozen=True)
class ShapeSpec:
    """One shape of a scene."""

    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A background colour and one or two shapes."""

    background: str
    shapes: tuple[ShapeSpec, ...]


# -- held-out combinations -----------------------------------------------------------------
def _all_triples() -> list[tuple[str, str, str]]:
    return [
        (colour, shape, background)
        for colour in COLOURS
        for shape in SHAPES
        for background in COLOURS
        if colour != background
    ]


# (colour, shape, background) combinations never drawn in training; the evaluation prompts
# ask for them, so a good score shows the model composes words rather than memorising scenes.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(random.Random(5).sample(_all_triples(), 16))
TRAIN_TRIPLES: tuple[tuple[str, str, str], ...] = tuple(
    t for t in _all_triples() if t not in HELD_OUT
)


# -- sampling scenes -----------------------------------------------------------------------
def random_scene(rng: random.Random, two_shape_fraction: float = 0.15) -> Scene:
    """A random training scene; never one that contains a held-out combination."""
    colour, shape, background = rng.choice(TRAIN_TRIPLES)
    first = ShapeSpec(shape, colour, rng.choice(tuple(SIZES)), rng.choice(tuple(POSITIONS)))
    if rng.random() >= two_shape_fraction:
        return Scene(background, (first,))
    # A second shape on the opposite side, so the two never overlap.
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
    pos1 = rng.choice(tuple(opposite))
    while True:
        c2, s2, _ = rng.choice(TRAIN_TRIPLES)
        if (c2, s2, background) not in HELD_OUT and c2 != background:
            break
    first = ShapeSpec(shape, colour, rng.choice(tuple(SIZES)), pos1)
    second = ShapeSpec(s2, c2, rng.choice(tuple(SIZES)), opposite[pos1])
    return Scene(background, (first, second))


def moved(scene: Scene, rng: random.Random) -> Scene:
    """The same shapes at other positions (two shapes stay on opposite sides)."""
    if len(scene.shapes) == 1:
        spec = scene.shapes[0]
        position = rng.choice([p for p in POSITIONS if p != spec.position])
        return Scene(scene.background, (replace(spec, position=position),))
    first, second = scene.shapes
    swap = {"left": "top", "right": "bottom", "top": "left", "bottom": "right"}
    if rng.random() < 0.5:
        return Scene(scene.background, (replace(first, position=second.position),
                                        replace(second, position=first.position)))  # fmt: skip
    return Scene(scene.background, (replace(first, position=swap[first.position]),
                                    replace(second, position=swap[second.position])))  # fmt: skip


# -- drawing -------------------------------------------------------------------------------
_SUPERSAMPLE = 4


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of ``shape`` with the area of a circle of radius ``r``, centroid at (cx, cy)."""
    if shape == "square":
        half = r * math.sqrt(math.pi) / 2
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
                (cx - half, cy + half)]  # fmt: skip
    if shape == "triangle":
        # Isosceles, pointing up, as wide as it is tall: area side²/2 = πr².
        side = r * math.sqrt(2 * math.pi)
        top = cy - 2 * side / 3
        bottom = cy + side / 3
        return [(cx, top), (cx + side / 2, bottom), (cx - side / 2, bottom)]
    steps = 48
    return [
        (cx + r * math.cos(2 * math.pi * i / steps), cy + r * math.sin(2 * math.pi * i / steps))
        for i in range(steps)
    ]


def _extent(shape: str, r: float) -> tuple[float, float, float, float]:
    """How far the shape reaches left, right, up and down from its centroid."""
    if shape == "square":
        half = r * math.sqrt(math.pi) / 2
        return half, half, half, half
    if shape == "triangle":
        side = r * math.sqrt(2 * math.pi)
        return side / 2, side / 2, 2 * side / 3, side / 3
    return r, r, r, r


def render(scene: Scene, rng: random.Random | None = None, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw ``scene``; ``rng`` adds a little jitter in position and size (None: exact)."""
    scale = _SUPERSAMPLE
    canvas = Image.new("RGB", (size * scale, size * scale), COLOURS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for spec in scene.shapes:
        fx, fy = POSITIONS[spec.position]
        r = SIZES[spec.size] * size / IMAGE_SIZE
        cx, cy = fx * size, fy * size
        if rng is not None:
            r *= rng.uniform(0.9, 1.1)
            cx += rng.uniform(-2.5, 2.5) * size / IMAGE_SIZE
            cy += rng.uniform(-2.5, 2.5) * size / IMAGE_SIZE
        # Keep the whole shape inside the picture: clipping would move its centroid.
        left, right, up, down = _extent(spec.shape, r)
        margin = 1.0
        cx = min(max(cx, left + margin), size - right - margin)
        cy = min(max(cy, up + margin), size - down - margin)
        points = [(x * scale, y * scale) for x, y in _shape_polygon(spec.shape, cx, cy, r)]
        draw.polygon(points, fill=COLOURS[spec.colour])
    return canvas.resize((size, size), Image.Resampling.BOX)


# -- captions ------------------------------------------------------------------------------
def _position_phrase(position: str, rng: random.Random | None) -> str:
    kind = "center" if position == "center" else ("corner" if " " in position else "edge")
    phrases = _POSITION_PHRASES[kind]
    phrase = phrases[0] if rng is None else rng.choice(phrases)
    return phrase.format(p=position)


def _size_word(size: str, rng: random.Random | None) -> str:
    return size if rng is None or rng.random() < 0.8 else rng.choice(SYNONYMS[size])


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def describe_shape(
    spec: ShapeSpec,
    rng: random.Random | None = None,
    with_size: bool = True,
    with_position: bool = True,
) -> str:
    """``a big red circle on the left`` (random wording when ``rng`` is given)."""
    words = [_size_word(spec.size, rng)] if with_size else []
    words += [spec.colour, spec.shape]
    text = " ".join(words)
    # Captions sometimes drop the article: "small yellow triangle at the top".
    if rng is None or rng.random() >= 0.2:
        text = f"{_article(text)} {text}"
    if with_position:
        text += " " + _position_phrase(spec.position, rng)
    return text


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """A caption for ``scene``: canonical wording without ``rng``, varied wording with it.

    With ``rng``, size, position or background are sometimes left out (then any value fits
    the caption), so short prompts such as "a blue circle" mean something to the model.
    """
    if rng is None:
        shapes = " and ".join(describe_shape(s) for s in scene.shapes)
        return f"{shapes}, {scene.background} background"
    with_size = rng.random() > 0.1
    with_position = rng.random() > 0.1
    with_background = rng.random() > 0.1
    shapes = " and ".join(describe_shape(s, rng, with_size, with_position) for s in scene.shapes)
    if not with_background:
        return shapes
    background = rng.choice(_BACKGROUND_PHRASES).format(b=scene.background)
    return f"{shapes}, {background}" if rng.random() < 0.6 else f"{shapes} {background}"


def prompt_for(shape: str, colour: str, size: str, position: str, background: str) -> str:
    """The canonical prompt of a single-shape scene (what the evaluation asks for)."""
    return caption(Scene(background, (ShapeSpec(shape, colour, size, position),)))


@dataclass(frozen=True)
class EvalCase:
    """One evaluation prompt and the single-shape scene it asks for."""

    prompt: str
    scene: Scene
    seed: int

    @property
    def target(self) -> ShapeSpec:
        return self.scene.shapes[0]


def evaluation_cases(count: int = 64, seed: int = 1234) -> list[EvalCase]:
    """``count`` single-shape prompts, each a held-out colour/shape/background combination.

    Positions and sizes cycle so every position word and both sizes are asked for about
    equally often.
    """
    rng = random.Random(seed)
    triples = sorted(HELD_OUT)
    rng.shuffle(triples)
    positions = list(POSITIONS)
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for i in range(count):
        colour, shape, background = triples[i % len(triples)]
        size = ("small", "big")[(i // 2 + i) % 2]
        shift = 0
        while True:  # the next position along if this exact prompt was already asked
            position = positions[(i * 7 + i // len(positions) + shift) % len(positions)]
            scene = Scene(background, (ShapeSpec(shape, colour, size, position),))
            shift += 1
            if caption(scene) not in seen or shift > len(positions):
                break
        seen.add(caption(scene))
        cases.append(EvalCase(caption(scene), scene, seed + i))
    return cases

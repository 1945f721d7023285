"""Generate the CLIP tokenizer files shipped in resources/model_configs/.

Stable Diffusion's tokenizers (SD1.x, SD2.x, both SDXL ones) share OpenAI CLIP's byte-level
BPE: 49,408 tokens built from ``bpe_simple_vocab_16e6.txt.gz`` (MIT), which ships inside the
open-clip-torch wheel. This script rebuilds ``vocab.json`` and ``merges.txt`` from that file
exactly as CLIP's reference tokenizer does, so the app needs no download to tokenize.

Usage: ``python scripts/make_tokenizers.py [--bpe FILE_OR_WHEEL]``. Without ``--bpe`` it
downloads the open-clip-torch wheel from PyPI (no dependencies) into a temporary folder.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from desktop.training.tokenizer import bytes_to_unicode  # noqa: E402

CONFIGS = ROOT / "resources" / "model_configs"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: folder -> padding token. SD2 and SDXL's second encoder (OpenCLIP) pad with "!" (id 0).
TOKENIZERS = {
    "sd15/tokenizer": EOS,
    "sd2/tokenizer": "!",
    "sdxl/tokenizer": EOS,
    "sdxl/tokenizer_2": "!",
}


def read_bpe(source: Path) -> list[str]:
    """Return the merge lines from the .gz file or from inside a wheel."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(BPE_NAME))
            blob = wheel.read(name)
    else:
        blob = source.read_bytes()
    text = gzip.GzipFile(fileobj=io.BytesIO(blob)).read().decode("utf-8")
    return text.split("\n")[1 : N_MERGES + 1]


def build_vocab(merges: list[str]) -> dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad}
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def fetch_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "open-clip-torch", "-d", str(dest)]
    subprocess.run(cmd, check=True)
    return next(dest.glob("open_clip_torch-*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bpe", type=Path, help="bpe_simple_vocab_16e6.txt.gz or an open-clip wheel"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.bpe or fetch_wheel(Path(tmp))
        merges = read_bpe(source)
    vocab = build_vocab(merges)
    assert len(vocab) == 49408, len(vocab)
    for rel, pad in TOKENIZERS.items():
        write_tokenizer(CONFIGS / rel, vocab, merges, pad)
        print(f"wrote {CONFIGS / rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

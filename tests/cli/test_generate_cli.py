"""``sandstorm generate`` and ``sandstorm models`` through the real entry point."""

import json

from PIL import Image

from desktop.app import main


def test_generate_writes_pngs_and_prints_json(tiny_sd, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--prompt",
            "a red circle",
            "--model",
            str(tiny_sd),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "9",
            "--batch",
            "2",
            "--out",
            str(out),
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["request"]["seed"] == 9
    assert len(payload["paths"]) == 2
    for path in payload["paths"]:
        assert path.startswith(str(out))
        with Image.open(path) as image:
            assert image.size == (64, 64)
            assert "parameters" in image.info and "Seed: " in image.info["parameters"]


def test_generate_img2img_and_plain_output(tiny_sd, tmp_path, capsys):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "red").save(init)
    code = main(
        [
            "generate",
            "--prompt",
            "a blue circle",
            "--model",
            str(tiny_sd),
            "--steps",
            "4",
            "--width",
            "64",
            "--height",
            "64",
            "--init-image",
            str(init),
            "--strength",
            "0.5",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 1 and lines[0].endswith(".png")


def test_generate_errors_are_one_clear_line(tiny_sd, tmp_path, capsys):
    assert main(["generate", "--prompt", "x", "--model", str(tiny_sd), "--width", "33"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sandstorm: error: Width must be a multiple of 8 (got 33; try 32)."]
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "missing")]) == 1
    assert "No model named" in capsys.readouterr().err
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    code = main(
        [
            "generate",
            "--prompt",
            "x",
            "--model",
            str(tiny_sd),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--init-image",
            str(not_image),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.startswith("sandstorm: error:")


def test_models_lists_usable_and_unusable(tiny_sd, tmp_path, capsys, monkeypatch):
    from desktop.engine import paths

    ckpts = paths.user_models_dir() / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "tiny").symlink_to(tiny_sd)
    (ckpts / "broken.safetensors").write_bytes(b"xx")
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny"]["usable"] and rows["tiny"]["label"] == "SD1.5"
    assert not rows["broken"]["usable"] and "too short" in rows["broken"]["reason"]
    assert main(["models"]) == 0
    assert "unusable" in capsys.readouterr().out


def test_generate_performance_flags_override_the_saved_settings(tiny_sd, tmp_path, capsys):
    from desktop.engine.settings import Settings, save_settings

    save_settings(Settings(precision="fp32"))
    base = ["generate", "--prompt", "a dot", "--model", str(tiny_sd), "--steps", "1"]
    base += ["--width", "64", "--height", "64", "--out", str(tmp_path), "--json"]
    base += ["--device", "cpu"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "fp32"  # from the settings
    assert main([*base, "--dtype", "bf16", "--memory-mode", "tiling", "--no-compile"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bf16"  # the flag wins
    # fp16 on the CPU is refused by the plan (several times slower there), not by the flag.
    assert main([*base, "--dtype", "fp16"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "fp32"


def test_generate_rejects_an_unknown_precision(tiny_sd, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "x", "--model", str(tiny_sd), "--dtype", "fp64"])
    assert "invalid choice: 'fp64'" in capsys.readouterr().err

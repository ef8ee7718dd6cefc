"""Options derived from config dataclasses: help from field comments, --config files under the command line,
named presets, and single-value options refused when repeated."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from wtours_base.options import StrictTyper, config_options, field_help, load_config_file

runner = CliRunner()


@dataclass
class Toy:
    """A config like the commands' ones."""

    inputs: list[Path]  # files to read
    out: Path = Path("out")  # where to write
    steps: int = 10  # steps to run;
    # a second line of help
    rate: float = 0.5  # learning rate
    mode: Literal["fast", "exact"] = "fast"  # how to run
    limit: int | None = None  # stop after this many
    check: bool = True  # check the inputs
    scale: tuple[float, float] = (0.2, 1.0)  # crop scale range
    tags: list[str] = field(default_factory=list)  # free tags
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # seeds
    kinds: list[Literal["a", "b"]] = field(default_factory=lambda: ["a"])  # kinds
    extra: dict = field(default_factory=dict)  # free options

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("--steps must be >= 0")


def _app(presets: Path | None = None) -> typer.Typer:
    app = StrictTyper(add_completion=False)

    @app.command()
    @config_options(Toy, arguments=["inputs"], flags={"out": ["--out", "-o"]}, presets=presets, section="toy")
    def run(cfg: Toy, quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
        typer.echo(json.dumps({**cfg.__dict__, "inputs": [str(p) for p in cfg.inputs], "out": str(cfg.out),
                               "quiet": quiet}))

    @app.command()
    def other(k: int = typer.Option(20, "--k")) -> None:
        typer.echo(str(k))

    return app


def _run(args: list[str], presets: Path | None = None) -> dict:
    result = runner.invoke(_app(presets), ["run", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_help_comes_from_the_field_comments_and_continues_on_comment_lines():
    helps = field_help(Toy)
    assert helps["steps"] == "Steps to run; a second line of help."
    assert helps["rate"] == "Learning rate." and helps["scale"] == "Crop scale range."
    result = runner.invoke(_app(), ["run", "--help"])
    assert "Learning rate." in result.output and "--no-check" in result.output and "fast|exact" in result.output


def test_defaults_types_and_a_config_file_under_the_command_line(tmp_path):
    got = _run(["a.mp4", "b.mp4"])
    assert got["inputs"] == ["a.mp4", "b.mp4"] and got["steps"] == 10 and got["limit"] is None and got["check"]
    file = tmp_path / "toy.toml"
    file.write_text('steps = 3\nrate = 1\nmode = "exact"\nscale = [0.1, 0.9]\ntags = ["x"]\ncheck = false\n'
                    'inputs = ["c.mp4"]\n')
    got = _run(["--config", str(file)])
    assert got["inputs"] == ["c.mp4"] and got["steps"] == 3 and got["rate"] == 1.0 and got["mode"] == "exact"
    assert got["scale"] == [0.1, 0.9] and got["tags"] == ["x"] and got["check"] is False
    # The command line wins, also when it gives the default value.
    got = _run(["--config", str(file), "--steps", "10", "--check", "d.mp4", "-q"])
    assert got["steps"] == 10 and got["check"] is True and got["inputs"] == ["d.mp4"] and got["quiet"]
    # YAML, with dashes, and a table per command.
    yaml_file = tmp_path / "all.yaml"
    yaml_file.write_text("toy:\n  steps: 7\nother:\n  k: 3\n")
    assert _run(["--config", str(yaml_file), "a.mp4"])["steps"] == 7


@pytest.mark.parametrize("text, message", [
    ("stepz = 3\n", "unknown setting 'stepz'"),
    ('steps = "many"\n', "steps: expected int"),
    ('mode = "slow"\n', "mode: one of fast, exact"),
    ("steps = -1\n", "--steps must be >= 0"),
    ("steps = [\n", "not valid TOML"),
])
def test_a_bad_config_file_is_one_clear_error(tmp_path, text, message):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    result = runner.invoke(_app(), ["run", "a.mp4", "--config", str(file)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert str(file) in result.output or message.startswith("--steps")


def test_lists_of_numbers_or_choices_take_commas_or_repeats_and_strings_never_split():
    assert _run(["x"])["seeds"] == [0, 1]  # the default, typed
    assert _run(["x", "--seeds", "3,4", "--seeds", "5"])["seeds"] == [3, 4, 5]
    assert _run(["x", "--kinds", "a,b"])["kinds"] == ["a", "b"]
    assert _run(["x", "--tags", "p{1,2}", "--tags", "q"])["tags"] == ["p{1,2}", "q"]  # brace patterns stay whole
    for args, message in ((["--seeds", "3,x"], "--seeds takes ints"), (["--kinds", "c"], "--kinds: one of a, b")):
        result = runner.invoke(_app(), ["run", "x", *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_dict_is_a_json_object_on_the_command_line_and_a_table_in_a_file(tmp_path):
    assert _run(["x"])["extra"] == {}
    assert _run(["x", "--extra", '{"a": [1, 2], "b": 0.5}'])["extra"] == {"a": [1, 2], "b": 0.5}
    (tmp_path / "c.toml").write_text("[extra]\nratio = 0.3\n")
    assert _run(["x", "--config", str(tmp_path / "c.toml")])["extra"] == {"ratio": 0.3}
    for text in ("{a: 1}", "[1, 2]"):
        result = runner.invoke(_app(), ["run", "x", "--extra", text])
        assert result.exit_code == 2 and "--extra takes a JSON object" in result.output, result.output


def test_a_missing_required_input_names_it():
    result = runner.invoke(_app(), ["run"])
    assert result.exit_code == 2 and "missing argument INPUTS" in result.output


def test_named_presets_and_their_files(tmp_path):
    (tmp_path / "small.toml").write_text("steps = 2\n")
    assert _run(["a.mp4", "--config", "small"], presets=tmp_path)["steps"] == 2
    result = runner.invoke(_app(tmp_path), ["run", "a.mp4", "--config", "nothere"])
    assert result.exit_code == 2 and "nothere" in result.output


def test_a_single_value_option_given_twice_is_refused():
    result = runner.invoke(_app(), ["other", "--k", "10", "--k", "20"])
    assert result.exit_code == 2 and "given 2 times" in result.output
    result = runner.invoke(_app(), ["run", "a.mp4", "--steps=1", "--steps", "2"])
    assert result.exit_code == 2 and "given 2 times" in result.output
    assert runner.invoke(_app(), ["other", "--k", "10"]).output.strip() == "10"


def test_the_dora_presets_are_valid_train_configs_and_the_tests_use_cpu_tiny():
    from conftest import TINY

    from dora.training.config import PRESETS, TrainConfig, preset
    from dora.training.methods import REGISTRY

    names = sorted(p.stem for p in PRESETS.glob("*.toml"))
    # the fixed ones, and one study preset per registered method (what `dora study` trains it with)
    assert names == sorted(["cpu-demo", "cpu-study", "cpu-tiny", "gpu-hour", *(f"cpu-study-{m}" for m in REGISTRY)])
    for name in names:
        TrainConfig(shards=["x"], **preset(name))
    assert TINY == load_config_file(PRESETS / "cpu-tiny.toml", TrainConfig) and TINY["arch"] == "vit_tiny_patch16_224"


def test_a_config_file_can_start_from_another_and_change_only_what_it_sets(tmp_path):
    from dora.training.config import TrainConfig, preset
    from wtours_base.options import load_config_file

    (tmp_path / "a.toml").write_text('arch = "vit_tiny_patch16_224"\nlr = 0.1\nbatch_size = 4\n')
    (tmp_path / "b.toml").write_text('base = "a"\nlr = 0.2\n')
    assert load_config_file(tmp_path / "b.toml", TrainConfig) == {"arch": "vit_tiny_patch16_224", "lr": 0.2, "batch_size": 4}
    (tmp_path / "c.toml").write_text('base = "nowhere"\n')
    with pytest.raises(ValueError, match="base 'nowhere' is not a config file beside it"):
        load_config_file(tmp_path / "c.toml", TrainConfig)
    # The searched study presets are the study's recipe with what the sweep chose.
    sharper = {"lr", "teacher_temp", "warmup_teacher_temp"}  # DINO's since the 3-seed check (sweep_seeds/)
    chosen = {"dora": {"lr", "momentum_teacher"}, "dino": sharper, "random_mask": sharper}
    for method, keys in chosen.items():
        searched, shared = preset(f"cpu-study-{method}"), preset("cpu-study")
        assert {k for k in searched if searched[k] != shared.get(k)} == keys
    # DINO and its random-mask ablation share a recipe, so the two differ by the masks alone.
    assert preset("cpu-study-dino") == preset("cpu-study-random_mask")

"""Config validation: presets load; every kind of mistake is a ConfigError naming file and field."""

from pathlib import Path

import pytest

from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_four_presets_exist_and_validate() -> None:
    assert {p.name for p in PRESETS} >= {"digits_cnn.yaml", "mnist_mlp.yaml", "mnist_cnn.yaml", "tabular_csv.yaml"}
    for preset in PRESETS:
        assert isinstance(load_config(preset), PipelineConfig)


def test_mnist_mlp_preset_is_the_classic_model() -> None:
    config = load_config(REPO / "configs" / "mnist_mlp.yaml")
    assert (config.model.family, config.model.hidden_units, config.model.dropout) == ("mlp", (128,), 0.2)
    assert (config.train.optimizer, config.train.learning_rate, config.train.batch_size, config.train.epochs) == (
        "adam", 0.001, 128, 10,
    )


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\n")
    config = load_config(path, ["train.epochs=2", "data.source=some/file.csv", "model.hidden_units=[4, 2]"])
    assert config.train.epochs == 2
    assert config.data.source == "some/file.csv"
    assert config.model.hidden_units == (4, 2)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("name: m\ntrain:\n  epochz: 3\n", [], r"config.yaml: invalid config\n  train.epochz: unknown key; expected one of: epochs"),
        ("name: m\nsurprise: 1\n", [], r"surprise: unknown key; expected one of: name, data"),
        ("name: m\ntrain:\n  epochs: many\n", [], r"train.epochs: Input should be a valid integer"),
        ("name: m\n", ["train.epochs=0"], r"train.epochs \(from --set train.epochs=0\): Input should be greater than or equal to 1 \(got 0\)"),
        ("name: m\n", ["train.optimizer=adamw"], r"train.optimizer \(from --set train.optimizer=adamw\): Input should be 'adam', 'sgd', 'rmsprop' or 'adagrad'"),
        ("name: m\n", ["prune.target_sparsity=1.0"], r"prune.target_sparsity \(from --set prune.target_sparsity=1.0\): Input should be less than 1"),
        ("name: m\n", ["quantize.modes=[int4]"], r"quantize.modes.0 \(from --set quantize.modes=\[int4\]\): Input should be 'dynamic', 'float16', 'int8' or 'qat'"),
        ("data: {}\n", [], r"name: required, but missing"),
        ("name: 'bad name/with slash'\n", [], r"name: String should match pattern"),
        ("- just\n- a list\n", [], r"expected a mapping of sections \(name, data, model, ...\), got a list"),
        ("", [], r"the file is empty; a config needs at least `name: <model name>`"),
        ("# only a comment\n", [], r"the file is empty"),
        ("name: [unclosed\n", [], r"not valid YAML"),
    ],
)
def test_invalid_configs_name_the_file_and_field(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(path, overrides)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs", r"--set 'train.epochs': expected dotted.key=value"),
        ("name.x=1", r"--set name.x=1: name is a value, not a section, so it has no field 'x'"),
        ("train=3", r"--set train=3: train is a section, not a value; set one of its fields: train.epochs, train.batch_size"),
        ("train.epochs.x=3", r"--set train.epochs.x=3: train.epochs is a value, not a section"),
    ],
)
def test_malformed_overrides_name_the_flag(tmp_path: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, "name: m\n"), [override])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\n")
    assert load_config(path).config_hash() == load_config(path).config_hash()
    assert load_config(path).config_hash() != load_config(path, ["train.epochs=3"]).config_hash()


def test_a_config_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory; give the path of a YAML config file"):
        load_config(tmp_path)


def test_values_in_messages_are_shortened(tmp_path: Path) -> None:
    """A 1 KB "billion laughs" file expands to a billion strings: the message stays a few lines."""
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")]
    laughs += [f"name: [{', '.join(['*h'] * 9)}]"]
    path = write(tmp_path, "\n".join(laughs) + "\n")
    assert path.stat().st_size < 1024
    with pytest.raises(ConfigError, match=r"name: Input should be a valid string \(got \[\[\[") as raised:
        load_config(path)
    assert len(str(raised.value)) < 2000

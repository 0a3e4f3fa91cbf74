from __future__ import annotations

from pathlib import Path

import pytest

from asm_kernel import Kernel
from asm_kernel.config import STARTER_CONFIG, Secret, config_from_dict, load_config
from asm_kernel.errors import ConfigError, UnknownComponentError


def test_no_config_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.source is None and cfg.providers == () and cfg.store is None
    assert cfg.home == tmp_path / "home"  # ASM_HOME


def test_asm_toml_in_cwd_is_found_and_starter_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text(STARTER_CONFIG)
    cfg = load_config()
    assert cfg.source == tmp_path / "asm.toml"
    assert cfg.store is not None and cfg.store.use == "duckdb"
    assert [p.name for p in cfg.providers] == ["echo"]
    assert cfg.run.max_turns == 8


def test_pyproject_tool_asm_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.asm.store]\nuse = "memory"\n')
    assert load_config().store.use == "memory"  # type: ignore[union-attr]


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text("[store\nuse = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config()


def test_env_interpolation_and_masking() -> None:
    cfg = config_from_dict(
        {"providers": [{"name": "c", "use": "echo", "prefix": "${GREETING:-hi}", "api_key": "${MY_KEY}"}]},
        env={"MY_KEY": "sk-very-secret-value"},
    )
    settings = cfg.providers[0].settings
    assert settings["api_key"] == "sk-very-secret-value" and settings["prefix"] == "hi"
    shown = repr(cfg.masked())
    assert "sk-very-secret-value" not in shown and "********" in shown


def test_missing_env_var_fails_only_when_the_component_is_built(make_kernel) -> None:
    cfg = {"providers": [{"name": "e", "use": "echo", "prefix": "${NOT_SET_ANYWHERE}"}]}
    kernel = make_kernel(cfg)
    with pytest.raises(ConfigError) as info:
        kernel._build_all()
    assert info.value.path == "providers[0].prefix" and "NOT_SET_ANYWHERE" in str(info.value)


def test_env_overrides_with_double_underscores() -> None:
    cfg = config_from_dict(
        {"providers": [{"use": "echo"}]},
        env={"ASM__STORE__USE": "memory", "ASM__PROVIDERS__0__CHUNK_SIZE": "3", "ASM__RUN__MAX_TURNS": "2"},
    )
    assert cfg.store.use == "memory"  # type: ignore[union-attr]
    assert cfg.providers[0].settings["chunk_size"] == 3
    assert cfg.run.max_turns == 2
    with pytest.raises(ConfigError, match="index"):
        config_from_dict({}, env={"ASM__PROVIDERS__3__MODEL": "x"})


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"provider": [{"use": "echo"}]}, env={})
    assert info.value.path == "provider" and 'did you mean "providers"?' in str(info.value)


def test_unknown_component_key_has_path_and_suggestion(make_kernel) -> None:
    kernel = make_kernel({"providers": [{"use": "echo"}, {"name": "b", "use": "echo", "modle": "x"}]})
    with pytest.raises(ConfigError) as info:
        kernel._build_all()
    assert str(info.value).startswith('providers[1].modle: unknown key; did you mean "model"?')


@pytest.mark.parametrize(
    ("settings", "path", "fragment"),
    [
        ({"chunk_size": "8"}, "providers[0].chunk_size", "expected an integer, got the string '8'"),
        ({"chunk_size": True}, "providers[0].chunk_size", "expected an integer"),
        ({"chunk_size": 0}, "providers[0].chunk_size", "at least 1"),
        ({"delay": "fast"}, "providers[0].delay", "expected a number"),
    ],
)
def test_wrong_types_name_the_path(make_kernel, settings, path, fragment) -> None:
    kernel = make_kernel({"providers": [{"use": "echo", **settings}]})
    with pytest.raises(ConfigError) as info:
        kernel._build_all()
    assert info.value.path == path and fragment in str(info.value)


def test_unknown_component_name_lists_what_is_installed(make_kernel) -> None:
    kernel = make_kernel({"providers": [{"use": "nonesuch"}]})
    with pytest.raises(UnknownComponentError) as info:
        kernel._build_all()
    assert info.value.path == "providers[0].use" and "echo" in str(info.value) and "scripted" in str(info.value)


def test_duplicate_names_and_missing_use_are_errors() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        config_from_dict({"providers": [{"use": "echo"}, {"use": "echo"}]}, env={})
    with pytest.raises(ConfigError) as info:
        config_from_dict({"providers": [{"name": "x"}]}, env={})
    assert info.value.path == "providers[0].use"


def test_run_defaults_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"run": {"max_turns": "many"}}, env={})
    assert info.value.path == "run.max_turns"


def test_run_provider_must_be_configured(make_kernel) -> None:
    kernel = make_kernel({"run": {"provider": "ghost"}})
    with pytest.raises(UnknownComponentError, match="ghost"):
        kernel._build_all()


def test_secret_never_shows_itself() -> None:
    s = Secret("sk-abc")
    assert "sk-abc" not in repr(s) and "sk-abc" not in str(s) and s.reveal() == "sk-abc"


def test_kernel_open_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('[store]\nuse = "memory"\n[[providers]]\nname = "e2"\nuse = "echo"\n')
    kernel = Kernel.open(path)
    kernel._build_all()
    assert list(kernel.providers) == ["e2"]

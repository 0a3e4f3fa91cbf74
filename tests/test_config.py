from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from asm_kernel import Kernel, hookimpl
from asm_kernel.builtin.echo import EchoProvider
from asm_kernel.config import STARTER_CONFIG, Secret, config_from_dict, load_config, validate_settings
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


# -- secrets in reprs, displays and errors ----------------------------------------------------


def test_repr_and_str_of_config_and_components_mask_interpolated_and_secret_values() -> None:
    from asm_kernel.secrets import is_registered

    cfg = config_from_dict(
        {
            "store": {"use": "memory"},
            "providers": [{"use": "echo", "prefix": "${MY_PREFIX}", "api_key": "literal-key-value"}],
            "run": {"system": "${MY_SYSTEM}"},
        },
        env={"MY_PREFIX": "prefix-from-env-123", "MY_SYSTEM": "system-from-env-456"},
    )
    shown = [repr(cfg), str(cfg), repr(cfg.providers[0]), str(cfg.providers[0]), repr(cfg.run)]
    for text in shown:
        for secret in ("prefix-from-env-123", "system-from-env-456", "literal-key-value"):
            assert secret not in text, text
    assert "********" in repr(cfg.providers[0]) and "use='echo'" in repr(cfg.providers[0])
    # Registered, so everything asm prints or stores hides them too.
    assert all(is_registered(s) for s in ("prefix-from-env-123", "system-from-env-456", "literal-key-value"))
    # The values themselves are intact for the code that uses them.
    assert cfg.providers[0].settings["prefix"] == "prefix-from-env-123" and cfg.run.system == "system-from-env-456"


def test_max_tokens_is_not_a_secret_key_but_auth_token_is() -> None:
    from asm_kernel.config import is_secret_key

    assert not is_secret_key("max_tokens") and not is_secret_key("max_tokens_field")
    assert all(is_secret_key(k) for k in ("api_key", "apiKey", "auth_token", "token", "client_secret", "password"))


@attrs.frozen
class _EchoingSettings:
    """Settings whose validator echoes the value, as careless plugin validators do."""

    base_url: str = attrs.field(default="http://x", validator=lambda i, a, v: _refuse_unless_http(a.name, v))
    mode: Literal["a", "b"] = "a"


def _refuse_unless_http(name: str, value: str) -> None:
    if not value.startswith("http"):
        raise ValueError(f"{name} must start with http://, got {value[:60]!r} ({value})")


class _EchoingPlugin:
    @staticmethod
    @hookimpl
    def asm_register_providers(register: Any) -> None:
        register("echoing", lambda settings, ctx: EchoProvider(name=ctx.name), settings=_EchoingSettings)


@pytest.mark.parametrize("canary", ["Qz9xK", "sk-canary-0123456789abcdefghij"])
def test_a_validator_error_never_shows_the_interpolated_value(canary: str) -> None:
    cfg = config_from_dict(
        {"store": {"use": "memory"}, "providers": [{"use": "echoing", "base_url": "${THE_KEY}"}]},
        env={"THE_KEY": canary},
    )
    kernel = Kernel(cfg, plugins=[_EchoingPlugin()])
    with pytest.raises(ConfigError) as info:
        kernel._build_all()
    assert info.value.path == "providers[0].base_url" and "must start with http://" in str(info.value)
    for text in (str(info.value), repr(info.value), json.dumps(info.value.to_dict())):
        assert canary not in text and canary[:4] not in text, text


def test_a_type_error_never_shows_an_interpolated_value() -> None:
    cfg = config_from_dict(
        {"store": {"use": "memory"}, "providers": [{"use": "echoing", "mode": "${MODE}"}]}, env={"MODE": "c"}
    )
    with pytest.raises(ConfigError) as info:
        Kernel(cfg, plugins=[_EchoingPlugin()])._build_all()
    assert str(info.value) == "providers[0].mode: expected one of 'a' | 'b', got a string"


# -- validation on cattrs: paths, types, every problem ----------------------------------------


@attrs.frozen
class _Inner:
    size: int = 1
    label: str = "x"


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class _Rich:
    name: str
    key: Secret | None = None
    where: Path = Path("here")
    colour: _Colour = _Colour.RED
    mode: Literal["fast", "safe"] = "safe"
    inner: _Inner | None = None
    inners: dict[str, _Inner] = attrs.field(factory=dict)
    pair: tuple[int, str] = (1, "a")
    tags: tuple[str, ...] = ()
    limit: int | float = 1


def test_validate_settings_structures_every_supported_type() -> None:
    rich = validate_settings(
        _Rich,
        {
            "name": "n",
            "key": "sk-xyz-secret",
            "where": "~/data",
            "colour": "blue",
            "mode": "fast",
            "inner": {"size": 3},
            "inners": {"a b": {"label": "y"}},
            "pair": [2, "b"],
            "tags": ["t"],
            "limit": 2.5,
        },
        "providers[0]",
    )
    assert rich.key == Secret("sk-xyz-secret") and "sk-xyz" not in repr(rich)
    assert rich.where == Path("~/data").expanduser() and rich.colour is _Colour.BLUE and rich.mode == "fast"
    assert rich.inner == _Inner(size=3) and rich.inners == {"a b": _Inner(label="y")}
    assert rich.pair == (2, "b") and rich.tags == ("t",) and rich.limit == 2.5


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({}, "providers[1].name", "missing required key (set it to a string)"),
        ({"name": "n", "inner": {"size": "3"}}, "providers[1].inner.size", "expected an integer, got the string '3'"),
        ({"name": "n", "inner": {"sise": 3}}, "providers[1].inner.sise", 'unknown key; did you mean "size"?'),
        ({"name": "n", "inners": {"a b": {"size": True}}}, 'providers[1].inners."a b".size', "got true"),
        ({"name": "n", "colour": "green"}, "providers[1].colour", "expected one of 'red' | 'blue'"),
        ({"name": "n", "mode": "slow"}, "providers[1].mode", "expected one of 'fast' | 'safe'"),
        ({"name": "n", "pair": [1]}, "providers[1].pair", "expected an array of 2 items"),
        ({"name": "n", "tags": "t"}, "providers[1].tags", "expected an array of strings, got the string 't'"),
        ({"name": "n", "tags": ["a", 2]}, "providers[1].tags[1]", "expected a string, got the integer 2"),
        ({"name": "n", "where": 5}, "providers[1].where", "expected a path string"),
        ({"name": "n", "key": 5}, "providers[1].key", "expected a string (secret), got the integer 5"),
        ({"name": "n", "limit": "many"}, "providers[1].limit", "expected an integer or a number"),
        ({"name": 1}, "providers[1].name", "expected a string, got the integer 1"),
    ],
)
def test_validation_errors_are_path_precise(data: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(_Rich, data, "providers[1]")
    assert info.value.path == path and fragment in str(info.value), str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"run": {"max_turns": 0, "temperature": 3.0}, "runtime": {"max_queued_runs": "x"}, "provider": []},
            env={},
        )
    problems = info.value.details["problems"]
    # A class's own validators stop at its first refusal; types and keys are all checked.
    assert [p.split(":")[0] for p in problems] == ["run.temperature", "runtime.max_queued_runs", "provider"]
    assert str(info.value).endswith("(2 more problems: runtime.max_queued_runs, provider)")


@pytest.mark.parametrize(
    ("run", "path", "fragment"),
    [
        ({"max_turns": 0}, "run.max_turns", "at least 1"),
        ({"max_turns": -3}, "run.max_turns", "at least 1"),
        ({"max_tokens": 0}, "run.max_tokens", "at least 1"),
        ({"temperature": 2.5}, "run.temperature", "from 0 to 2"),
        ({"temperature": float("nan")}, "run.temperature", "from 0 to 2"),
        ({"agent_id": " "}, "run.agent_id", "must not be empty"),
        ({"requires": "tools"}, "run.requires", "expected an array of strings"),
    ],
)
def test_run_numbers_are_checked_at_load(run: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"run": run}, env={})
    assert info.value.path == path and fragment in str(info.value)


def test_runtime_and_resilience_refuse_nan_and_infinity() -> None:
    for section, key in (("runtime", "idle_timeout"), ("resilience", "deadline"), ("runtime", "lease_ttl")):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError) as info:
                config_from_dict({section: {key: value}}, env={})
            assert info.value.path == f"{section}.{key}" and "finite" in str(info.value)


# -- unset variables fail only where they are used --------------------------------------------


def test_an_unset_variable_inside_a_longer_string_fails_only_when_built(make_kernel) -> None:
    cfg = config_from_dict(
        {"store": {"use": "memory"}, "providers": [{"use": "echo", "prefix": "http://${NO_SUCH_HOST}:8000"}]},
        env={},
    )
    assert repr(cfg.providers[0].settings["prefix"]) == "${NO_SUCH_HOST}"
    with pytest.raises(ConfigError) as info:
        Kernel(cfg)._build_all()
    assert info.value.path == "providers[0].prefix" and "NO_SUCH_HOST is not set" in str(info.value)
    assert "export NO_SUCH_HOST=" in str(info.value)


def test_an_unset_variable_deep_in_untyped_settings_names_its_path(make_kernel) -> None:
    kernel = make_kernel({"providers": [{"use": "scripted", "turns": [[{"text": "${NOT_SET_HERE}"}]]}]})
    with pytest.raises(ConfigError) as info:
        kernel._build_all()
    assert info.value.path == "providers[0].turns[0][0].text"


# -- files that cannot be read ----------------------------------------------------------------


def test_invalid_utf8_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_bytes(b'[store]\nuse = "memory"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "asm.toml is not valid UTF-8 (byte 0xe9 at line 3)" in str(info.value)


@pytest.mark.parametrize("depth", [70, 500, 5000])
def test_deep_nesting_is_a_config_error(tmp_path: Path, depth: int) -> None:
    (tmp_path / "asm.toml").write_text("x = " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError, match="deep"):
        load_config()


def test_an_invalid_pyproject_toml_is_an_error_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "pyproject.toml is not valid TOML" in str(info.value) and "[tool.asm]" in str(info.value)
    (tmp_path / "asm.toml").write_text('[store]\nuse = "memory"\n')  # asm.toml wins: pyproject unread
    assert load_config().store.use == "memory"  # type: ignore[union-attr]


def test_an_env_override_into_a_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"store": {"use": "memory"}}, env={"ASM__STORE__USE__DEEPER": "x"})
    assert info.value.path == "store.use" and "not a table" in str(info.value)


# -- plugin switches from a broken config -----------------------------------------------------


def test_plugin_switches_are_read_from_a_config_that_does_not_validate(tmp_path: Path) -> None:
    from asm_kernel.config import read_plugin_switches

    (tmp_path / "asm.toml").write_text('[plugins]\ndisabled = ["x"]\nmodules = ["m"]\n[run]\nmax_turns = "many"\n')
    switches = read_plugin_switches()
    assert switches.disabled == ("x",) and switches.modules == ("m",) and switches.autoload
    assert switches.problem is not None and switches.problem.path == "run.max_turns"
    switches = read_plugin_switches(env={"ASM__PLUGINS__DISABLED": '["y"]'})
    assert switches.disabled == ("y",)
    # Whatever cannot be read blocks every entry point: which ones are disabled is unknown.
    (tmp_path / "asm.toml").write_text('[plugins]\ndisabled = "x"\n')
    assert read_plugin_switches().autoload is False
    (tmp_path / "asm.toml").write_bytes(b"[plugins\xff")
    assert read_plugin_switches().autoload is False


def test_brackets_inside_strings_and_comments_are_not_nesting(tmp_path: Path) -> None:
    brackets = "[" * 100 + "{" * 100
    (tmp_path / "asm.toml").write_text(
        f'# {brackets}\n[run]\nsystem = "{brackets}"\nagent_id = \'{brackets}\'\nmodel = """\n{brackets}\n"""\n'
    )
    cfg = load_config()
    assert cfg.run.system == brackets and cfg.run.agent_id == brackets and cfg.run.model == brackets + "\n"


def test_an_unknown_key_that_is_not_a_bare_key_is_quoted_in_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"run": {"max turns": 3}}, env={})
    assert info.value.path == 'run."max turns"' and 'did you mean "max_turns"?' in str(info.value)


def test_literal_passwords_in_connection_strings_are_masked_in_the_effective_config() -> None:
    from asm_kernel.config import config_from_dict

    cfg = config_from_dict(
        {
            "store": {
                "use": "memory",
                "dsn": "postgresql://asm:hunter2pw@db:5432/asm",
                "conninfo": "host=db password=s3cr3tzz",
            }
        },
        env={},
    )
    shown = repr(cfg.masked())
    assert "hunter2pw" not in shown and "s3cr3tzz" not in shown
    assert "postgresql://asm:****@db:5432/asm" in shown

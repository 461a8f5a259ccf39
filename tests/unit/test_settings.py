"""Settings: sources, bounds, the secret key."""

from __future__ import annotations

import pytest

from freemodels.errors import ConfigError
from freemodels.settings import OPENROUTER_MODELS_LIMIT, load_settings, read_env_secret
from freemodels.source import SourceKind, choose_kind


def kind_of(settings) -> SourceKind:  # type: ignore[no-untyped-def]
    return choose_kind(settings.source, key_present=settings.resolved_api_key() is not None)


def test_default_is_sandbox_without_key() -> None:
    settings = load_settings()
    assert kind_of(settings) is SourceKind.SANDBOX
    assert settings.resolved_api_key() is None


def test_key_switches_auto_to_openrouter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-test-secret")
    settings = load_settings()
    assert kind_of(settings) is SourceKind.OPENROUTER
    assert settings.resolved_api_key() == "sk-or-v1-test-secret"
    assert "sk-or-v1-test-secret" not in repr(settings)
    assert "sk-or-v1-test-secret" not in str(settings.model_dump())


def test_explicit_sandbox_wins_over_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-test-secret")
    assert kind_of(load_settings(source="sandbox")) is SourceKind.SANDBOX


def test_base_url_source() -> None:
    settings = load_settings(source="http://127.0.0.1:8080/v1/")
    assert kind_of(settings) is SourceKind.BASE_URL
    assert settings.source == "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"source": "ftp://x"}, "source"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"probe_deadline_s": -1}, "probe_deadline_s"),
        ({"max_tokens": 1}, "max_tokens"),
        ({"rotation_models_limit": 0}, "rotation_models_limit"),
        ({"rotation_models_limit": 101}, "rotation_models_limit"),
    ],
)
def test_invalid_values_give_one_clear_error(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(**overrides)


def test_invalid_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCOVERY_MAX_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="DISCOVERY_MAX_CONCURRENCY='lots' is not a whole number"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DISCOVERY_REQUESTS_PER_MINUTE", "abc", "DISCOVERY_REQUESTS_PER_MINUTE='abc' is not a whole number"),
        ("DISCOVERY_REQUESTS_PER_MINUTE", "0", "DISCOVERY_REQUESTS_PER_MINUTE='0' must be at least 1"),
        ("DISCOVERY_PROBE_DEADLINE_S", "soon", "DISCOVERY_PROBE_DEADLINE_S='soon' is not a number"),
        ("DISCOVERY_MAX_TOKENS", "99999999", "DISCOVERY_MAX_TOKENS='99999999' must be at most 32768"),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid settings: {message}"


def test_a_bad_key_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(requests_per_minute="x", api_key=["sk-or-v1-not-a-string"])
    assert "sk-or-v1" not in str(caught.value)
    assert "requests_per_minute='x' is not a whole number" in str(caught.value)


def test_database_defaults_under_data_dir(tmp_path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    assert settings.database == tmp_path / "discovery.duckdb"
    assert settings.runs_dir == tmp_path / "runs"


def test_read_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LOCAL_KEY", " abc ")
    assert read_env_secret("MY_LOCAL_KEY") == "abc"
    assert read_env_secret("MY_MISSING_KEY") is None
    with pytest.raises(ConfigError):
        read_env_secret("not a name")


def test_rotation_models_limit_defaults_to_openrouters_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from freemodels.sandbox.app import MODELS_LIMIT

    # The export's default fits what the sandbox (as OpenRouter) accepts.
    assert load_settings().rotation_models_limit == OPENROUTER_MODELS_LIMIT == MODELS_LIMIT == 3
    monkeypatch.setenv("DISCOVERY_ROTATION_MODELS_LIMIT", "2")
    assert load_settings().rotation_models_limit == 2

"""Service configuration: environment over YAML file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.cds.settings import Settings


def test_yaml_file_configures_issuers_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "axiom.yaml"
    config.write_text(
        "port: 9000\n"
        "fhir_deadline_s: 1.5\n"
        "trusted_issuers:\n"
        "  - iss: https://ehr.example\n"
        "    jwks_url: https://ehr.example/jwks.json\n"
        "    tenant: a\n"
        "trust_presets: [cds-hooks-sandbox]\n")
    monkeypatch.setenv("AXIOM_CONFIG", str(config))
    monkeypatch.setenv("AXIOM_PORT", "9100")
    settings = Settings()
    assert settings.port == 9100  # environment over file
    assert settings.fhir_deadline_s == 1.5
    assert settings.trusted_issuers[0].iss == "https://ehr.example"
    assert settings.trusted_issuers[0].algorithms == ["ES384", "RS384"]
    assert settings.trust_presets == ["cds-hooks-sandbox"]
    assert settings.auth_required is True


def test_issuers_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AXIOM_CONFIG", raising=False)
    monkeypatch.setenv("AXIOM_TRUSTED_ISSUERS", '[{"iss": "https://ehr.example", "jwks_url": "https://e/j"}]')
    assert Settings().trusted_issuers[0].jwks_url == "https://e/j"


def test_serve_refuses_to_start_without_issuers_unless_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from adapter.cli import app
    monkeypatch.delenv("AXIOM_CONFIG", raising=False)
    monkeypatch.delenv("AXIOM_TRUSTED_ISSUERS", raising=False)
    monkeypatch.delenv("AXIOM_AUTH_REQUIRED", raising=False)
    monkeypatch.setenv("AXIOM_PORT", "8080")  # serve writes its options into the environment: undone after
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "no trusted issuer" in result.stderr


def test_the_fhir_server_allow_list_takes_only_absolute_http_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.delenv("AXIOM_CONFIG", raising=False)
    monkeypatch.setenv("AXIOM_FHIR_SERVERS", '["https://fhir.hospital.example/r4/"]')
    assert Settings().fhir_servers == ["https://fhir.hospital.example/r4"]
    for typo in ('["fhir.hospital.example/r4"]', '["ftp://fhir.hospital.example"]', '["https://"]'):
        monkeypatch.setenv("AXIOM_FHIR_SERVERS", typo)
        with pytest.raises(ValidationError, match="absolute http"):
            Settings()


def test_every_setting_is_documented() -> None:
    docs = Path(__file__).parents[1] / "docs"
    text = (docs / "service.md").read_text() + (docs / "security.md").read_text()
    missing = [f"AXIOM_{name.upper()}" for name in Settings.model_fields if f"AXIOM_{name.upper()}" not in text]
    assert not missing, f"settings not in docs/service.md or docs/security.md: {missing}"

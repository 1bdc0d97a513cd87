"""Airflow finds the provider, its hook and its connection form, as a user would see them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_phonestatus.get_provider_info import CONN_FIELDS, get_provider_info


def test_provider_info_validates_against_airflows_own_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_is_registered() -> None:
    (ep,) = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider")
    ]
    assert ep.load()() == get_provider_info()


def _airflow(*args: str) -> str:
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "airflow"), *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_airflow_cli_lists_the_provider_and_its_connection_type() -> None:
    providers = json.loads(_airflow("providers", "list", "--output", "json"))
    assert any(p["package_name"] == "airflow-provider-phonestatus" for p in providers)
    hooks = json.loads(_airflow("providers", "hooks", "--output", "json"))
    (ours,) = [h for h in hooks if h["connection_type"] == "phonestatus"]
    assert ours["class"] == "airflow_provider_phonestatus.hooks.phonestatus.PhoneStatusHook"
    assert ours["package_name"] == "airflow-provider-phonestatus"
    assert ours["hook_name"] == "Phone Number Status"


def test_connection_form_shows_labelled_fields() -> None:
    """The UI's own service builds the form from our declarations (3.2+: conn-fields in provider
    info; 3.1: the hook's widget methods)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [h for h in HookMetaService.hook_meta_data() if h.connection_type == "phonestatus"]
    assert meta.hook_name == "Phone Number Status"
    standard = meta.standard_fields
    assert standard is not None
    assert standard.host is not None and standard.host.title == "Base URL"
    assert standard.password is not None and standard.password.title == "API key"
    for hidden in (standard.login, standard.port, standard.url_schema):
        assert hidden is not None and hidden.hidden
    extra = meta.extra_fields or {}
    assert {name: extra[name]["schema"]["title"] for name in CONN_FIELDS} == {
        name: spec["label"] for name, spec in CONN_FIELDS.items()
    }

"""docs/settings.md is generated from the Settings model: it cannot drift, and every setting is described."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from core.settings_doc import SettingRow, iter_settings, render, undocumented

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
NUMERIC = [r for r in iter_settings() if r.type_name in ("int", "float")]


def test_committed_doc_matches_the_generator() -> None:
    assert DOC.read_text() == render(), "run: python -m core.settings_doc > docs/settings.md"


def test_every_setting_has_a_description() -> None:
    assert undocumented() == [], "add description= to these fields in core/settings.py"


def test_every_setting_is_listed_once() -> None:
    rows = list(iter_settings())
    assert len({r.env_var for r in rows}) == len(rows)
    assert {"HYBRIDMEM_ENV", "HYBRIDMEM_REDIS__URL", "HYBRIDMEM_AUTH__API_KEYS"} <= {r.env_var for r in rows}
    assert all(f"`{r.env_var}`" in DOC.read_text() for r in rows)


@pytest.mark.parametrize("row", NUMERIC, ids=[r.env_var for r in NUMERIC])
def test_documented_variable_name_sets_the_field(row: SettingRow, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("HYBRIDMEM_")]:
        monkeypatch.delenv(name)
    default = float(row.default)
    value = default + 1 if row.type_name == "int" else default / 2
    monkeypatch.setenv(row.env_var, str(int(value) if row.type_name == "int" else value))
    loaded: object = Settings(_env_file=None)
    for part in row.path.split("."):
        loaded = getattr(loaded, part)
    assert loaded == pytest.approx(value)


def test_every_http_route_is_documented_in_api_md() -> None:
    """docs/api.md names every route the Ingress serves (the app built as the Ingress builds it)."""
    import contextlib

    from core.settings import load_settings
    from deployments.http.api import create_api
    from deployments.http.routers import ingress_routers

    never_opened: Any = contextlib.nullcontext  # the lifespan never runs: only the schema is read
    app = create_api(never_opened, extra_routers=ingress_routers(load_settings({})))
    api_md = (DOC.parent / "api.md").read_text()
    routes = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    assert len(routes) > 20
    missing = [f"{m} {p}" for m, p in routes if f"{m} {p}" not in api_md]
    assert missing == [], "document these routes in docs/api.md"
    assert "GET /metrics" in api_md

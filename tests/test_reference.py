"""Generated docs stay in sync with the code."""

from __future__ import annotations

from aero_relay.config import SETTINGS
from aero_relay.observability.metrics import Event
from aero_relay.reference import config_markdown, rewrite_blocks
from tests.conftest import PROJECT_ROOT


def test_readme_generated_blocks_are_current() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert rewrite_blocks(readme) == readme, "run: python -m aero_relay.reference"


def test_config_table_lists_every_env_var_and_flag() -> None:
    table = config_markdown()
    for s in SETTINGS:
        for env in s.envs:
            assert f"`{env}`" in table
        for flag in s.flags:
            assert f"`--{flag}`" in table


def test_metrics_table_lists_every_event() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for event in Event:
        assert f"`{event.value}`" in readme

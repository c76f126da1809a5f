"""Reference tables generated from the code (README configuration table, metrics reference).

`python -m aero_relay.reference` rewrites the generated blocks in README.md; a test fails when
they are stale, so the docs can never drift from the Config definition or the metrics table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aero_relay.config import POLICY_ENV_VARS, SETTINGS, Setting, _default_text
from aero_relay.observability.metrics import events_markdown

__all__ = ["config_markdown", "rewrite_blocks"]

_POLICY_HELP = {
    "DESTINATION_POLICY_PRESET": (
        "`prod`",
        "egress preset: `prod` (deny by default) or `dev` (allow by default)",
    ),
    "UDP_DESTINATION_POLICY_PRESET": ("", "alias of DESTINATION_POLICY_PRESET (the first one present wins)"),
    "POLICY_PRESET": ("", "alias of DESTINATION_POLICY_PRESET"),
    "ALLOW_PRIVATE_NETWORKS": ("from preset", "allow private/special destinations (`true`/`false`)"),
    "ALLOW_UDP_CIDRS": ('`""`', "comma-separated destination CIDRs to allow"),
    "DENY_UDP_CIDRS": ('`""`', "comma-separated destination CIDRs to deny (checked first)"),
    "ALLOW_UDP_PORTS": ('`""`', "comma-separated destination ports/ranges to allow"),
    "DENY_UDP_PORTS": ('`""`', "comma-separated destination ports/ranges to deny (checked first)"),
}


def _row(s: Setting) -> str:
    envs = " / ".join(f"`{e}`" for e in s.envs)
    flags = " / ".join(f"`--{f}`" for f in s.flags) or "(env only)"
    default = _default_text(s)
    if s.default_text is None:
        default = f"`{default}`"
    return f"| {envs} | {flags} | {default} | {s.help} |"


def config_markdown() -> str:
    lines = ["| Env var | Flag | Default | Meaning |", "|---|---|---|---|"]
    lines += [_row(s) for s in SETTINGS]
    for name in POLICY_ENV_VARS:
        default, meaning = _POLICY_HELP[name]
        lines.append(f"| `{name}` | (env only) | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


_BLOCKS = {"config-table": config_markdown, "metrics-table": events_markdown}


def rewrite_blocks(text: str) -> str:
    for name, gen in _BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, g=gen: m.group(1) + g() + m.group(2), text)  # type: ignore[misc]
    return text


def main() -> int:
    for path in sys.argv[1:] or ["README.md", "docs/operations.md"]:
        p = Path(path)
        if p.exists():
            p.write_text(rewrite_blocks(p.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A per-Pi summary after a fleet playbook: each Pi's rollout, install or collect outcome.

The playbooks record each Pi's outcome with `set_stats` (`leukoscope_rollout`,
`leukoscope_install`, `leukoscope_collect`); this prints them as a table when the run
ends, however it ends: a rollout stopped by `max_fail_percentage` ends the playbook, so a
closing play would never run. Pis the rollout never reached are listed as such.
"""

from __future__ import annotations

import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: leukoscope_summary
    type: aggregate
    short_description: a per-Pi table of rollout, install and collect outcomes
    description: Prints what each Pi did when a Leukoscope fleet playbook ends.
    requirements:
      - enabled in tools/ansible/ansible.cfg (callbacks_enabled)
"""

KINDS = ("leukoscope_rollout", "leukoscope_install", "leukoscope_collect")


class CallbackModule(CallbackBase):  # type: ignore[misc]
    """Prints the table at the end of the run."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "leukoscope_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()

    def v2_playbook_on_stats(self, stats: Any) -> None:
        custom: dict[str, dict[str, Any]] = dict(getattr(stats, "custom", {}) or {})
        run = custom.pop("_run", {}) or {}
        elapsed = time.monotonic() - self._started
        for kind in KINDS:
            rows = {h: d[kind] for h, d in custom.items() if isinstance(d, dict) and kind in d}
            plan = run.get(f"{kind}_plan") or {}
            if not rows and not plan:
                continue
            hosts = list(plan.get("hosts") or []) + sorted(set(rows) - set(plan.get("hosts") or []))
            title = kind.removeprefix("leukoscope_").upper()
            what = f" of {plan['bundle']}" if plan.get("bundle") else ""
            head = f"\nLEUKOSCOPE {title}{what}: {len(hosts)} Pi(s) in {elapsed:.1f} s"
            self._display.display(head)
            width = max((len(h) for h in hosts), default=4)
            tally: dict[str, int] = {}
            for host in hosts:
                row = rows.get(host)
                if row is None:
                    result, text = "not reached", "stopped before its batch: keeps its model"
                elif kind == "leukoscope_rollout":
                    result = str(row.get("result"))
                    text = f"{row.get('before')} -> {row.get('after')}  {row.get('detail')}"
                else:
                    result, text = str(row.get("result")), str(row.get("detail", ""))
                tally[result] = tally.get(result, 0) + 1
                colour = {"ok": "green", "not reached": "yellow"}.get(result, "red")
                self._display.display(f"  {host:<{width}}  {result:<11}  {text}", color=colour)
            self._display.display("  " + ", ".join(f"{n} {r}" for r, n in sorted(tally.items())))

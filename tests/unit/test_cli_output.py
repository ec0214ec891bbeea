"""Plain output (gitops.cli.output): what a pipe gets is what rich would print there, without rich."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from gitops.cli.output import plain
from gitops.cli.render import _console_class, escape

TEXTS = ["plain", "a\tb\tc", "x\rdone", "\x1b[31mred\x1b[0m", "[bold]x[/bold] [1,2]", "path\\", "C:\\new\\[x]",
         "  trailing   ", "x" * 300, "bell\x07", "nul\x00x", "back\bspace", "[link=http://x]y[/link]", "\\\\[bold]",
         "a\fb\vc", "[/]", "[", "]", "[[x]]", "\\"]


@pytest.mark.parametrize("text", TEXTS)
def test_plain_says_what_rich_prints_for_escaped_user_text_inside_our_markup(text):
    for markup in (escape(text), f"  [dim]web |[/dim] {escape(text)}",
                   f"[green]OK[/green] [bold]{escape(text)}[/bold] {escape(text)}"):
        buffer = io.StringIO()
        _console_class()(file=buffer, highlight=False, soft_wrap=True, width=200).print(markup)
        assert plain(markup) + "\n" == buffer.getvalue(), markup


def test_plain_leaves_emoji_codes_as_the_log_wrote_them():
    assert plain("  [dim]web |[/dim] deploy :rocket: done") == "  web | deploy :rocket: done"


def test_progress_on_a_pipe_writes_plain_lines_without_loading_rich():
    script = """
import sys
from gitops.cli.render import Progress
from gitops.events import LogLine, PhaseEntered, StepStarted, StepSucceeded, Warned
p = Progress()
for event in (StepStarted("web", "env changed", action="redeploy"), PhaseEntered("web", "stopping [old]"),
              LogLine("web", "line\\twith tab"), Warned(None, "careful"), StepSucceeded("web", "redeploy")):
    p(event)
p.close()
print("rich loaded" if any(m == "rich" or m.startswith("rich.") for m in sys.modules) else "no rich")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["web redeploy: env changed", "  web -> stopping [old]",
                                          "  web | line    with tab", "! careful", "OK web redeploy", "no rich"]

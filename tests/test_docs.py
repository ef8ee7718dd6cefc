"""The docs stay honest: every relative link and every repository path named in README.md, SECURITY.md and
docs/ exists, every `wtours` / `dora` command and option in their code blocks is in that command's --help, and
the README stays a product page (at most 25 KB)."""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("wtours/", "wtours_base/", "dora/", "analysis/", "benchmarks/", "tests/", "docs/", "manifests/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_paths_exist(page):
    text = page.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # [text](target) and ![alt](target)
        if "://" not in target and not (page.parent / target).exists():
            missing.append(target)
    for span in re.findall(r"`([^`\s]+)`", text):  # repository paths named in code spans
        path = span.rstrip(".,:;)")
        if path.startswith(TOP) and not any(c in path for c in "*{}<>$") and not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page.name} names what is not there: {sorted(set(missing))}"


def test_the_readme_is_a_product_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 25_000
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Two commands", "## Quick start: from a tour to an evaluated encoder", "## What it is"]
    assert {"## Results now", "## Documentation", "## Layout"} <= set(headings)


class HelpTexts:
    """`--help` of each (sub)command, asked once."""

    def __init__(self):
        from dora.cli import app as dora_app
        from wtours.cli import app as wtours_app

        self.apps, self.texts, self.runner = {"dora": dora_app, "wtours": wtours_app}, {}, CliRunner()

    def __call__(self, tool: str, words: tuple[str, ...]) -> str | None:
        if (tool, words) not in self.texts:
            result = self.runner.invoke(self.apps[tool], [*words, "--help"], env={"COLUMNS": "300"})
            self.texts[tool, words] = result.output if result.exit_code == 0 else None
        return self.texts[tool, words]


def unknown_options(text: str, helps: HelpTexts) -> list[str]:
    """`command --option` pairs in the shell code blocks of `text` that the command's --help does not list."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        for line in block.splitlines():
            match = re.search(r"(?:^|\s|-m )(wtours|dora(?:\.cli)?)\s+(.*)", line.split(" #")[0].strip())
            if not match:
                continue
            tool = "dora" if match.group(1).startswith("dora") else "wtours"
            try:
                words = shlex.split(match.group(2))
            except ValueError:
                continue
            sub: tuple[str, ...] = ()
            for word in words:  # the subcommands: words before the first option that have a --help of their own
                if word.startswith("-") or "/" in word or Path(word).suffix or helps(tool, (*sub, word)) is None:
                    break
                sub = (*sub, word)
            listed = helps(tool, sub) or ""
            found += [f"{tool} {' '.join(sub)} {word.split('=')[0]}" for word in words
                      if word.startswith("--") and word.split("=")[0] not in listed]
    return found


def test_every_command_option_in_the_docs_is_in_its_help():
    helps = HelpTexts()
    assert unknown_options("```bash\ndora train --shards x --no-such-option 3\n```", helps) == \
        ["dora train --no-such-option"]  # the check can fail
    problems = {page.name: unknown_options(page.read_text(), helps) for page in PAGES}
    assert not any(problems.values()), problems

"""The README and docs/: size, the test command, generated tables, links, self-containment.

Backend-independent, so it runs once, in the JAX pass.
"""

import os
import re
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
README_LIMIT = 12_288  # bytes

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent: runs once, in the JAX pass"
)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def markdown_files():
    return [README] + sorted(
        os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")
    )


def test_readme_is_a_front_page():
    size = os.path.getsize(README)
    assert size <= README_LIMIT, f"README.md is {size:,} bytes, over {README_LIMIT:,}"


def test_readme_test_command_is_the_one_ci_runs():
    def test_commands(text):
        return [line.strip() for line in text.splitlines()
                if "run_all_backends.sh" in line and not line.lstrip().startswith("#")]

    (readme_command,) = [c for c in test_commands(read(README)) if c.startswith("pip install")]
    ci_commands = test_commands(read(os.path.join(ROOT, ".ci", "run")))
    assert ci_commands == [readme_command], (ci_commands, readme_command)


def test_tables_are_rendered_from_the_results():
    result = subprocess.run(
        [sys.executable, os.path.join(DOCS, "render.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def strip_code(text):
    """Markdown without fenced code blocks and inline code spans (no links there)."""
    text = re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "code", text)


def anchors(path):
    """The heading anchors GitHub gives a markdown file."""
    text = re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", read(path), flags=re.M | re.S)
    seen, result = {}, set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_relative_links_point_to_files_that_exist():
    broken = []
    for path in markdown_files():
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)",
                                 strip_code(read(path))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                if file_part else path
            where = f"{os.path.relpath(path, ROOT)}: {target}"
            if not os.path.exists(linked):
                broken.append(f"{where} (no such file)")
            elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


# Spelled in two pieces so that this file does not mention them itself.
OUTSIDE_REFERENCES = ("REFERENCE" + ".md", ".." + "/shared")
SCANNED = ["README.md", "docs", "keras_egemma", "tests", "integration", "guides"]


def test_nothing_refers_to_files_outside_the_repository():
    found = []
    for entry in SCANNED:
        top = os.path.join(ROOT, entry)
        paths = [top] if os.path.isfile(top) else [
            os.path.join(folder, name)
            for folder, dirs, names in os.walk(top)
            if "__pycache__" not in folder
            for name in names
        ]
        for path in paths:
            try:
                text = read(path)
            except (UnicodeDecodeError, OSError):
                continue  # binary files (weights, figures)
            for needle in OUTSIDE_REFERENCES:
                if needle in text:
                    found.append(f"{os.path.relpath(path, ROOT)}: {needle}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)

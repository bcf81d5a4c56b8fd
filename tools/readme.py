"""README.md from nbs/index.ipynb (`make readme`): the markdown cells as they are, each code cell as a Python block, and
links to notebooks made relative to the repository root. tests/test_project.py checks that README.md is this file's output."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = "<!-- generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file -->"


def render(index: Path = ROOT / "nbs" / "index.ipynb") -> str:
    cells = json.loads(Path(index).read_text())["cells"]
    parts = []
    for i, cell in enumerate(cells):
        text = "".join(cell["source"]).strip("\n")
        if cell["cell_type"] == "code":
            text = f"```python\n{text}\n```"
        else:
            text = re.sub(r"\]\((?!https?://|#|/)([^)]+\.ipynb)\)", r"](nbs/\1)", text)
        parts.append(text)
        if i == 0:
            parts.append(NOTE)
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    out = ROOT / "README.md"
    out.write_text(render())
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)

"""Puts a fastconv-bench report.md into README.md, between the report markers.

    fastconv-bench --out bench-report && python benchmarks/readme_report.py bench-report/report.md

The README's results are then exactly what the command wrote: no figure is typed by hand.
"""

import argparse
import re
from pathlib import Path

START = "<!-- fastconv-bench report: start (written by benchmarks/readme_report.py) -->"
END = "<!-- fastconv-bench report: end -->"


def embed(report_md: str, readme: str) -> str:
    """The README with the report (its title dropped, its headings one level deeper) between the markers."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README has no report markers ({START!r} ... {END!r})")
    lines = report_md.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join(re.sub(r"^(#+) ", r"#\1 ", line) for line in lines).strip()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n\n{body}\n\n{END}{tail}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="the report.md that fastconv-bench wrote")
    p.add_argument("--readme", type=Path, default=Path(__file__).resolve().parent.parent / "README.md")
    args = p.parse_args()
    args.readme.write_text(embed(args.report.read_text(encoding="utf-8"), args.readme.read_text(encoding="utf-8")),
                           encoding="utf-8")


if __name__ == "__main__":
    main()

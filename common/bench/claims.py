"""The README's performance numbers, copied from BENCHMARKS.md so they cannot drift from it.

A number in README.md that BENCHMARKS.md measured stands between two markers that name its claim:

    1.16× faster steps  ->  <!--bench:compile_speedup-->1.16×<!--/bench--> faster steps

(invisible when the Markdown is rendered). Each claim below says where in BENCHMARKS.md its number is
(a section heading and a regular expression) and how the README writes it. `make bench` rewrites the
marked numbers after it writes BENCHMARKS.md; `--check` (and a test) fails when the README differs.

    python -m common.bench.claims [--check] [--benchmarks BENCHMARKS.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text

MARKER = re.compile(r"<!--bench:(?P<name>[a-z0-9_]+)-->(?P<text>.*?)<!--/bench-->", re.S)


class ClaimError(ValueError):
    """A claim whose number cannot be found, or a marker that names no claim."""


@dataclass(frozen=True)
class Claim:
    name: str
    section: str  # the start of a "## " heading of BENCHMARKS.md
    pattern: str  # a regular expression over that section; group 1 is the number
    write: Callable[[str], str]  # the number as the README writes it


def _times(value: str) -> str:
    return f"{value}×"


def _seconds(value: str) -> str:
    return f"{value} s"


def _whole_seconds(value: str) -> str:
    return f"{float(value):.0f} s"


def _percent(value: str) -> str:
    return f"{value} %"


def _payback(value: str) -> str:
    # "**773 steps**", or "never" where compiled steps were not faster on the measuring machine
    if value == "never":
        return "never (compiled steps were not faster)"
    return f"about {int(value.strip('*').split()[0].replace(',', '')):,} steps"


def _gflop(value: str) -> str:
    number, unit = value.split()
    gflop = float(number) / (1000.0 if unit == "MFLOP" else 1.0)
    return f"{gflop:.2f} GFLOP"


CLAIMS = (
    Claim("checkpointing_memory", "ResNet memory of one training step",
          r"Checkpointing needs \*\*(\d+)%\*\* of the memory", _percent),
    Claim("compile_speedup", "Does torch.compile pay back",
          r"Compiled steps are \*\*([\d.]+)x\*\* faster", _times),
    Claim("compile_seconds_cold", "Does torch.compile pay back",
          r"\| torch\.compile, empty Inductor cache[^|]*\| ([\d.]+) \|", _whole_seconds),
    Claim("compile_payback_steps", "Does torch.compile pay back",
          r"paid back after (\*\*[\d,]+ steps\*\*|never)", _payback),
    Claim("compile_seconds_warm", "Does torch.compile pay back",
          r"\| torch\.compile, from the cache it filled[^|]*\| ([\d.]+) \|", _seconds),
    Claim("t1_linear_seconds_per_scan", "t1-linear preprocessing",
          r"^\| 1 \| [\d.]+ \| ([\d.]+) \|", _seconds),
    Claim("t1_linear_two_processes", "t1-linear preprocessing",
          r"2 processes vs 1: \*\*([\d.]+)x\*\*", _times),
    Claim("resnet_strided_64_flops", "Presets: what the recipes cost",
          r"^\| ResNet \| `small_recipe_strided` \| 64\^3 \| [^|]+\| [^|]+\| ([\d.]+ [MG]FLOP) \|", _gflop),
    Claim("resnet_small_32_flops", "Presets: what the recipes cost",
          r"^\| ResNet \| `small` \| 32\^3 \| [^|]+\| [^|]+\| ([\d.]+ [MG]FLOP) \|", _gflop),
)
BY_NAME = {claim.name: claim for claim in CLAIMS}


def _section(benchmarks: str, heading: str, where: str) -> str:
    parts = re.split(r"^## ", benchmarks, flags=re.M)
    for part in parts[1:]:
        if part.startswith(heading):
            return part
    raise ClaimError(f"{where}: no section '## {heading}…'")


def read_claim(benchmarks: str, claim: Claim, where: str = "BENCHMARKS.md") -> str:
    """One claim's number as the README writes it, read from the text of BENCHMARKS.md."""
    found = re.search(claim.pattern, _section(benchmarks, claim.section, where), flags=re.M)
    if found is None:
        raise ClaimError(f"{where}: section '## {claim.section}…' has no number for the README's claim "
                         f"'{claim.name}' (pattern {claim.pattern!r}); was the section's sentence reworded?")
    return claim.write(found.group(1))


def measured(benchmarks: str, where: str = "BENCHMARKS.md") -> dict[str, str]:
    """Every claim's number as the README writes it, read from the text of BENCHMARKS.md."""
    return {claim.name: read_claim(benchmarks, claim, where) for claim in CLAIMS}


def rewrite(readme: str, values: dict[str, str], where: str = "README.md") -> str:
    """The README with each marked number replaced by its claim's measured value."""
    unknown = sorted({m["name"] for m in MARKER.finditer(readme)} - set(values))
    if unknown:
        raise ClaimError(f"{where}: marker(s) {', '.join(unknown)} name no claim of common/bench/claims.py "
                         f"(known: {', '.join(sorted(values))})")
    unused = sorted(set(values) - {m["name"] for m in MARKER.finditer(readme)})
    if unused:
        raise ClaimError(f"{where}: no marker for the claim(s) {', '.join(unused)}: mark the number the README "
                         f"quotes, or drop the claim")
    return MARKER.sub(lambda m: f"<!--bench:{m['name']}-->{values[m['name']]}<!--/bench-->", readme)


def differences(readme: str, values: dict[str, str]) -> list[str]:
    """'claim: README says X, BENCHMARKS.md Y' for each marked number that differs."""
    return [f"{m['name']}: README says {m['text']!r}, BENCHMARKS.md {values[m['name']]!r}"
            for m in MARKER.finditer(readme) if m["name"] in values and m["text"] != values[m["name"]]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="only report the numbers that differ (exit 1)")
    args = parser.parse_args(argv)
    for path in (args.benchmarks, args.readme):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    readme = args.readme.read_text()
    try:
        values = measured(args.benchmarks.read_text(), where=str(args.benchmarks))
        updated = rewrite(readme, values, where=str(args.readme))
    except ClaimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        for line in differences(readme, values):
            print(line)
        return 1 if updated != readme else 0
    if updated != readme:
        atomic_write_text(args.readme, updated)
        for line in differences(readme, values):
            print(f"rewritten: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

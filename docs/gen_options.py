"""Generate docs/options.md: every training option → what it does → the test that proves it.

    python docs/gen_options.py           # rewrite docs/options.md
    python docs/gen_options.py --check   # exit 1 when docs/options.md is stale; list what is missing

Options and their descriptions come from the config schema (``trainer/config/schema.py``); proofs from
the module-level ``PROVES`` dict of every ``tests/test_options_*.py``::

    PROVES = {
        "network.lokr_factor": "test_lokr_factor_changes_the_factors",        # a test here
        "sample.seed": ["test_seed_and_walk_seed", "test_other"],            # several
        "datasets.cache_latents_to_disk": "tests/test_trainer.py::test_x",   # a test elsewhere
    }

Keys are dotted config paths; list indices may be left out or written as ``0`` / ``[]``
(``datasets.flip_x``, ``datasets.0.flip_x``), and a key below an option edited as one table
(``sample.prompts.seed``) counts for that option. The files are read with ``ast``, not imported,
so this runs without torch. An option with no proving test is listed as MISSING; a PROVES entry
that names no option or no existing test function is listed under "Problems".
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "options.md"
TESTS = ROOT / "tests"
PATTERN = "test_options_*.py"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Imported once ROOT is on sys.path, so the script runs from any folder.
from trainer.config.fields import WIZARD_STEPS  # noqa: E402
from trainer.config.introspection import field_meta, iter_fields  # noqa: E402
from trainer.config.paths import generic_path  # noqa: E402


@dataclass
class Option:
    path: str  # as the schema lists it: datasets.0.flip_x
    description: str
    step: str
    archs: list[str]
    proofs: list[tuple[str, str, str]] = field(default_factory=list)  # (file, test, sub-key)

    @property
    def shown(self) -> str:
        return generic_path(self.path, "[]")


def normalise(key: str) -> str:
    """'datasets[].flip_x' / 'datasets.0.flip_x' / 'datasets.flip_x' -> 'datasets.flip_x'."""
    key = key.replace("[]", "")
    return ".".join(part for part in key.split(".") if part and not part.isdigit())


def schema_options() -> list[Option]:
    found = []
    for path, info in iter_fields():
        meta = field_meta(info)
        description = " ".join((info.description or "").split())
        found.append(Option(path, description, meta.get("step", ""), meta.get("archs") or []))
    return found


def _module_tests(tree: ast.Module) -> set[str]:
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def _proves_dict(tree: ast.Module) -> dict | None:
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "PROVES" for t in targets):
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    return None


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def collect(options: list[Option], tests_dir: Path = TESTS) -> list[str]:
    """Attach every PROVES entry to its option; return the problems found."""
    by_key = {normalise(o.path): o for o in options}
    problems: list[str] = []
    test_cache: dict[Path, set[str]] = {}

    def tests_in(path: Path) -> set[str]:
        if path not in test_cache:
            test_cache[path] = _module_tests(_parse(path)) if path.is_file() else set()
        return test_cache[path]

    for module in sorted(tests_dir.glob(PATTERN)):
        rel = module.relative_to(ROOT).as_posix()
        try:
            proves = _proves_dict(_parse(module))
        except (SyntaxError, ValueError) as err:
            problems.append(f"{rel}: PROVES could not be read ({err})")
            continue
        if proves is None:
            continue
        if not isinstance(proves, dict):
            problems.append(f"{rel}: PROVES is not a dict")
            continue
        for key, refs in proves.items():
            option, sub = _match(str(key), by_key)
            if option is None:
                problems.append(f"{rel}: PROVES key `{key}` names no option of the schema")
                continue
            for ref in [refs] if isinstance(refs, str) else list(refs):
                file, _, name = ref.rpartition("::")
                target = (ROOT / file) if file else module
                shown_file = target.relative_to(ROOT).as_posix() if target.is_file() else file
                if name not in tests_in(target):
                    problems.append(
                        f"{rel}: `{key}` names `{ref}`, which is no test function in {shown_file}"
                    )
                    continue
                proof = (shown_file, name, sub)
                if proof not in option.proofs:
                    option.proofs.append(proof)
    return problems


def _match(key: str, by_key: dict[str, Option]) -> tuple[Option | None, str]:
    wanted = normalise(key)
    if wanted in by_key:
        return by_key[wanted], ""
    parts = wanted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # a field inside an option edited as one table
        option = by_key.get(".".join(parts[:cut]))
        if option is not None:
            return option, ".".join(parts[cut:])
    return None, ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _proof_cell(option: Option) -> str:
    if not option.proofs:
        return "**MISSING**"
    return "<br>".join(
        f"[`{name}`](../{file})" + (f" (`{sub}`)" if sub else "")
        for file, name, sub in option.proofs
    )


def render(options: list[Option] | None = None, problems: list[str] | None = None) -> str:
    if options is None:
        options = schema_options()
        problems = collect(options)
    problems = problems or []
    missing = [o for o in options if not o.proofs]
    lines = [
        "# Training options and the tests that prove them",
        "",
        "<!-- Generated by docs/gen_options.py from trainer/config/schema.py and the PROVES dicts of "
        "tests/test_options_*.py. Do not edit: run `python docs/gen_options.py`. -->",
        "",
        "Every option of the training config, what it does (its description in the schema, which "
        "the wizard and the YAML comments show too) and the test that fails if the trainer "
        "ignores it. Tests are collected from the `PROVES` dict at the top of each "
        "`tests/test_options_*.py`. An option without a proving test is marked **MISSING**.",
        "",
        f"**{len(options) - len(missing)} of {len(options)} options proven; "
        f"{len(missing)} MISSING.**",
        "",
    ]
    order = list(WIZARD_STEPS)
    steps = sorted({o.step for o in options}, key=lambda s: order.index(s) if s in order else 99)
    for step in steps:
        title, what = WIZARD_STEPS.get(step, (step, ""))
        lines += [
            f"## {title}",
            "",
            what,
            "",
            "| Option | What it does | Proved by |",
            "|---|---|---|",
        ]
        for o in (o for o in options if o.step == step):
            archs = f" *({', '.join(o.archs)} only)*" if o.archs else ""
            lines.append(f"| `{o.shown}` | {_cell(o.description)}{archs} | {_proof_cell(o)} |")
        lines.append("")
    lines += ["## MISSING", ""]
    if missing:
        lines += [f"Options without a proving test ({len(missing)}):", ""]
        lines += [f"- `{o.shown}`" for o in missing]
    else:
        lines.append("None: every option is proven by a test.")
    lines.append("")
    if problems:
        lines += ["## Problems in PROVES", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def report() -> tuple[str, list[str], list[str]]:
    """(the document, paths of options still MISSING, problems)."""
    options = schema_options()
    problems = collect(options)
    return render(options, problems), [o.shown for o in options if not o.proofs], problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/options.md is stale")
    args = parser.parse_args(argv)
    text, missing, problems = report()
    print(f"{len(missing)} option(s) MISSING a proving test: {', '.join(missing) or 'none'}")
    for problem in problems:
        print(f"problem: {problem}")
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale — run: python docs/gen_options.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""docs/options.md is generated from the schema and the PROVES dicts, and is up to date.

Options still without a proving test are printed (and shown as a warning), not failed on: the
table says MISSING for them. Run ``python docs/gen_options.py`` after changing a field's
description or a PROVES dict.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROVES: dict[str, str] = {}  # this module proves the table, not an option


def generator():
    spec = importlib.util.spec_from_file_location("gen_options", ROOT / "docs" / "gen_options.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_options"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_options_table_is_up_to_date_and_lists_what_is_missing() -> None:
    gen = generator()
    text, missing, problems = gen.report()
    print(f"\n{len(missing)} option(s) MISSING a proving test:")
    for path in missing:
        print(f"  MISSING {path}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    if missing or problems:
        warnings.warn(
            f"{len(missing)} option(s) without a proving test (see docs/options.md): "
            + ", ".join(missing)
            + (f"; {len(problems)} problem(s) in PROVES dicts" if problems else ""),
            stacklevel=1,
        )
    for path in missing:
        assert f"- `{path}`" in text  # listed in the MISSING section
    committed = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert committed == text, "docs/options.md is stale — run: python docs/gen_options.py"


def test_the_data_networks_sampling_save_proofs_name_real_options_and_tests() -> None:
    """Every option row is in the table; this suite's own PROVES entries all resolve (problems
    in other groups' files are only reported by the test above)."""
    gen = generator()
    options = gen.schema_options()
    problems = gen.collect(options)
    text = gen.render(options, problems)
    assert all(f"| `{option.shown}` |" in text for option in options)
    mine = [f"tests/test_options_{group}.py" for group in ("data", "networks", "sampling", "save")]
    assert [p for p in problems if p.startswith(tuple(mine))] == []
    proven = {gen.normalise(o.path) for o in options if o.proofs}
    for path in mine:
        keys = gen._proves_dict(gen._parse(ROOT / path))
        assert keys and all(gen.normalise(key) in proven for key in keys), path

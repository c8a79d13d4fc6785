"""Imports point down the pipeline (issue 13): each module sits in a layer and imports only modules of
its own layer or below; data/ is pure data code; the report reads results.json without torch. The
domain packages (glue/, minimal_pairs/) hold a domain's reader and scorer side by side, so their
modules are placed one by one (`glue.tasks` with the data code, `glue.readout` with the read-outs).

Read from the source with ast (nothing is imported), so the test takes well under a second and every
import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "robablate"

# Lowest first: the pipeline order corpus -> tokenizer -> token cache -> formats -> batching -> masking
# (data/) -> model -> config -> pretraining data / Lightning modules -> pretrain -> read-outs ->
# results -> pipeline. A new module must be placed here (the test fails until it is): a top-level
# module or package by its name, a module of a domain package by its dotted name.
LAYERS = [
    ["errors", "io", "schema", "settings", "threads", "peak", "quiet", "collapse", "trend", "relaunch",
     "glue", "minimal_pairs"],                  # the domain packages' __init__: a docstring, no imports
    ["data", "glue.tasks", "glue.hub", "glue.encoding", "glue.synthetic_tasks",
     "minimal_pairs.blimp_reader", "minimal_pairs.zorro_reader"],  # pure data code: no Plan, no Lightning wiring
    ["models", "glue.metrics", "optim", "loggers", "registry", "sections"],  # loggers take a LoggerSpec, never the config
    ["config"],                                 # checks every rule (each module owns its own) -> Plan
    ["datamodule", "glue.finetune", "progress"],
    ["pretrain"],
    ["tune", "glue.readout", "minimal_pairs.blimp", "minimal_pairs.zorro"],  # the read-outs
    ["results", "summary", "overrides", "identical", "dryrun"],
    ["pipeline"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
# The report is a separate program over results.json files: it must not need the training stack.
REPORT_ALLOWED = {"errors", "io", "schema", "collapse", "trend", "report", "registry", "sections"}
HEAVY = {"torch", "lightning", "hydra", "transformers", "omegaconf", "tokenizers"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


DOMAINS = {"glue", "minimal_pairs"}  # packages whose modules are placed one by one


def placed(dotted: str) -> str:
    """A module name below robablate -> its LAYERS entry: `glue.tasks.get_task` -> `glue.tasks`,
    `data.corpus` -> `data`, `glue` (the package itself) -> `glue`."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] in DOMAINS and len(parts) > 1 else parts[0]


def top(path: Path) -> str:
    """robablate/<top>/... or robablate/<top>.py -> its LAYERS entry ('' for robablate/__init__.py)."""
    parts = [p for p in path.relative_to(PACKAGE).with_suffix("").parts if p != "__init__"]
    return placed(".".join(parts)) if parts else ""


def imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    out: set[str] = set()
    pkg = list(path.relative_to(SRC).with_suffix("").parts[:-1]) if path.is_relative_to(SRC) else []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*pkg[: len(pkg) - node.level + 1], *([base] if base else [])])
            out.add(base)
            if base.startswith("robablate"):  # `from robablate.glue import finetune` names the module
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def robablate_tops(path: Path) -> set[str]:
    return {placed(m.removeprefix("robablate.")) for m in imports(path) if m.startswith("robablate.")}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_pipeline(path: Path) -> None:
    name = top(path)
    if name in ("", "report"):
        return
    assert name in RANK, f"{path.relative_to(SRC)}: place `{name}` in a layer of tests/test_layering.py"
    up = sorted(t for t in robablate_tops(path) if t != name and RANK.get(t, len(LAYERS)) > RANK[name])
    assert not up, f"{path.relative_to(SRC)} (layer {RANK[name]}) imports {up}, which sit above it"


def test_report_needs_no_training_stack() -> None:
    for path in (PACKAGE / "report").rglob("*.py"):
        found = imports(path)
        assert not {m.split(".")[0] for m in found} & HEAVY, f"{path.relative_to(SRC)} imports {found & HEAVY}"
        assert robablate_tops(path) <= REPORT_ALLOWED, f"{path.relative_to(SRC)}: {robablate_tops(path)}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The ast reading finds imports inside functions and `from robablate import x` forms."""
    f = PACKAGE / "data" / "formats.py"
    assert "errors" in robablate_tops(f)
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from robablate import config\n    import robablate.pretrain\n")
    assert {m for m in imports(probe) if m.startswith("robablate.")} == {"robablate.config", "robablate.pretrain"}
    probe.write_text("from robablate.glue import finetune\nfrom robablate.minimal_pairs.blimp import pll\n")
    assert robablate_tops(probe) == {"glue", "glue.finetune", "minimal_pairs.blimp"}

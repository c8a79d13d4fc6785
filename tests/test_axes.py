"""One table of axes (schema.AXIS_TABLE) and one list of the keys that are not part of an arm
(schema.NOT_ARM_KEYS): every reader takes them from there, and a new axis touches few files. The
toy axis below exists only in this test: it is added to a copy of the tree the way docs/design.md
tells a contributor to, and the config, the LR tuner's cache key and the report all pick it up."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from robablate.schema import AXES, AXIS_TABLE, FOLDER_EXCLUDED_KEYS, NOT_ARM_KEYS, RUN_ONLY_KEYS, not_arm

ROOT = Path(__file__).resolve().parents[1]


def test_hydra_folder_names_leave_out_exactly_the_schema_list():
    hydra = yaml.safe_load((ROOT / "conf" / "hydra" / "default.yaml").read_text(encoding="utf-8"))
    exclude = hydra["job"]["config"]["override_dirname"]["exclude_keys"]
    assert sorted(exclude) == sorted(FOLDER_EXCLUDED_KEYS) and len(exclude) == len(set(exclude))
    assert all(not_arm(k) for k in FOLDER_EXCLUDED_KEYS)  # the extra entries are sub-keys of NOT_ARM_KEYS
    assert set(RUN_ONLY_KEYS) <= set(NOT_ARM_KEYS)


def test_axis_table_is_the_only_list():
    from robablate.report.design import CANONICAL_BASELINE

    assert AXES == tuple(a.name for a in AXIS_TABLE)
    assert CANONICAL_BASELINE == {"masking": "static", "nsp": "true", "format": "segment_pair", "seq_len": "128",
                                  "scheduler": "linear"}
    for a in AXIS_TABLE:  # each shipped value has its preset (or is a bool)
        group = ROOT / "conf" / a.name
        if group.is_dir():
            assert {v for v in a.values} <= {p.stem for p in group.glob("*.yaml")}, a.name


def test_axes_of_reads_the_table():
    from conftest import compose_cfg
    from robablate.config import axes_of, validate

    cfg = compose_cfg(["masking=dynamic", "nsp=false", "format=full_sentences", "seq_len=64"])
    axes = axes_of(cfg, validate(cfg))
    assert list(axes) == list(AXES)
    assert axes["masking"] == "dynamic" and axes["nsp"] is False and axes["seq_len"] == "64"
    assert axes_of(compose_cfg([]), validate(compose_cfg([])))["format"] == "segment_pair"  # auto resolved


TOY_ROW = '    Axis("toy", "toy", ("a", "b"), "a"),\n'
TOY_KEY = "toy: a                  # the toy axis of tests/test_axes.py (a value the pipeline ignores)\n"

PROBE = r'''
import json, sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from robablate.config import axes_of, validate
from robablate.tune import arm_key
from robablate.report import load_report

conf, out = Path(sys.argv[1]), Path(sys.argv[2])
with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
    cfgs = {v: compose("config", overrides=[f"toy={v}"]) for v in ("b", "a")}
axes = {v: axes_of(c, validate(c)) for v, c in cfgs.items()}
for v in ("a", "b"):
    for seed in range(3):
        d = out / f"toy={v}" / f"seed={seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "schema_version": 1, "status": "complete", "run_dir": str(d), "seed": seed, "axes": axes[v],
            "config": {"toy": v, "seed": seed}, "overrides": [f"toy={v}"],
            "pretrain": {"val_mlm_loss": 5.0 - 0.1 * (v == "b") + 0.01 * seed}, "glue": {}}))
rep = load_report([out])
row = rep.paired[(rep.paired["metric"] == "val_mlm_loss")].iloc[0]
print(json.dumps({"axes": axes["b"], "keys_differ": arm_key(cfgs["a"]) != arm_key(cfgs["b"]),
                  "report_axes": rep.axes, "baseline": rep.baselines["toy"], "arm": row["arm"],
                  "n_pairs": int(row["n_pairs"]), "diff": float(row["diff_mean"])}))
'''


def _tree_diff(a: Path, b: Path) -> list[str]:
    """Files that differ or exist on one side only (relative paths)."""
    out = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out += [str(Path(a.name) / f) for f in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += [str(Path(a.name) / f) for f in _tree_diff(a / sub, b / sub)]
    return out


def test_a_new_axis_is_one_row_and_one_key(tmp_path):
    """The touch-list of docs/design.md, done: a row in schema.AXIS_TABLE and its key in conf/config.yaml
    (plus, for a contributor, a paragraph of docs and a test). axes_of records it, it is part of the
    arm for the LR tuner, and the report compares its arms, baseline first, paired by seed."""
    src, conf = tmp_path / "src", tmp_path / "conf"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", conf)
    schema = src / "robablate" / "schema.py"
    text = schema.read_text(encoding="utf-8")
    end = text.index("\n)\nAXES = ")
    schema.write_text(text[:end + 1] + TOY_ROW + text[end + 1:], encoding="utf-8")
    config = conf / "config.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("seed: 0 ", TOY_KEY + "seed: 0 ", 1), encoding="utf-8")

    touched = _tree_diff(ROOT / "src", src) + _tree_diff(ROOT / "conf", conf)
    assert sorted(touched) == ["conf/config.yaml", "src/robablate/schema.py"], touched
    assert len(touched) + 2 <= 4  # + docs + the test: the touch-list of docs/design.md

    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", PROBE, str(conf), str(tmp_path / "runs")], env=env,
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["axes"]["toy"] == "b" and list(got["axes"])[-1] == "toy"
    assert got["keys_differ"]  # an axis is part of the arm: each value tunes its own LR
    assert got["report_axes"] == ["toy"] and got["baseline"] == "a" and got["arm"] == "b"
    assert got["n_pairs"] == 3 and abs(got["diff"] + 0.1) < 1e-9

from pathlib import Path

import pytest

from reportgen.catalog import json_schema
from reportgen.errors import SpecError
from reportgen.spec import (
    ReportSpec,
    apply_overrides,
    load_spec,
    loads_spec,
)

GOOD = """\
title: EfficientNet-Lite0 on digits
seed: 0
dataset: {kind: digits, limit: 100, sample: stratified}
models:
  - name: effnet
    timm: tf_efficientnet_lite0
    weights: efficientnet_lite0
    input_size: 96
    layers: [blocks.2, 134, {name: global_pool, reshape: mean}]
reducers: [pca, {tsne: {perplexity: 30}}, {umap: {n_neighbors: 15}}]
output: {dir: out}
"""


def test_good_spec_is_frozen_and_keeps_library_names(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD)
    spec = load_spec(p)
    assert [r.method for r in spec.reducers] == ["pca", "tsne", "umap"]
    assert spec.reducers[1].perplexity == 30 and spec.reducers[2].n_neighbors == 15
    assert [l.name for l in spec.models[0].layers] == ["blocks.2", 134, "global_pool"]
    assert spec.output.dir == tmp_path / "out"  # relative to the spec's folder
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        spec.seed = 3  # frozen


def test_error_names_yaml_path_value_and_line():
    bad = GOOD.replace("{tsne: {perplexity: 30}}", "{tsne: {perplexity: -5}}")
    with pytest.raises(SpecError) as e:
        loads_spec(bad)
    assert "reducers[1].tsne.perplexity: must be > 0, got -5 (line 10)" in str(e.value)


def test_every_error_listed_with_line():
    bad = GOOD.replace("seed: 0", "seed: -1\ncolour: red").replace("limit: 100", "limit: 0")
    with pytest.raises(SpecError) as e:
        loads_spec(bad)
    joined = "\n".join(e.value.errors)
    assert "seed: must be >= 0, got -1 (line 2)" in joined
    assert "colour: unknown key" in joined and "(line 3)" in joined
    assert "dataset.limit: must be > 0, got 0" in joined
    assert len(e.value.errors) == 3


def test_unknown_key_suggests_close_name():
    with pytest.raises(SpecError, match=r"models\[0\]\.input_sise: unknown key; did you mean 'input_size'"):
        loads_spec(GOOD.replace("input_size: 96", "input_sise: 96"))


def test_malformed_yaml_reports_line():
    with pytest.raises(SpecError, match=r"malformed YAML \(line 3"):
        loads_spec("title: x\ndataset: {kind: digits\nmodels: [")


def test_alias_bomb_refused_before_expansion():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]\n"
    with pytest.raises(SpecError, match="alias bomb"):
        loads_spec(bomb)


def test_unknown_dataset_kind_and_wrong_type():
    with pytest.raises(SpecError, match=r"dataset: unknown kind 'folders'"):
        loads_spec(GOOD.replace("kind: digits", "kind: folders"))
    with pytest.raises(SpecError, match=r"models\[0\]\.batch_size"):
        loads_spec(GOOD.replace("input_size: 96", "input_size: 96\n    batch_size: lots"))


def test_duplicates_refused():
    with pytest.raises(SpecError, match="duplicate layer 'blocks.2'"):
        loads_spec(GOOD.replace("[blocks.2, 134,", "[blocks.2, blocks.2,"))
    with pytest.raises(SpecError, match="listed twice"):
        loads_spec(GOOD.replace("reducers: [pca,", "reducers: [pca, tsne,"))


def test_model_needs_exactly_one_source():
    with pytest.raises(SpecError, match="exactly one of 'timm'"):
        loads_spec(GOOD.replace("    timm: tf_efficientnet_lite0\n", ""))
    with pytest.raises(SpecError, match="at most one of weights, checkpoint, pretrained"):
        loads_spec(GOOD.replace("input_size: 96", "input_size: 96\n    pretrained: true"))


def test_set_overrides():
    spec = loads_spec(
        GOOD, overrides=["dataset.limit=50", "models[0].input_size=128", "reducers[1].tsne.perplexity=5", "title=x y"]
    )
    assert spec.dataset.limit == 50 and spec.models[0].input_size == 128 and spec.title == "x y"
    assert spec.reducers[1].perplexity == 5
    with pytest.raises(SpecError, match="KEY=VALUE"):
        apply_overrides({}, ["nonsense"])


def test_pca_is_always_present_and_schema_exports():
    spec = loads_spec(GOOD.replace("reducers: [pca, ", "reducers: ["))
    assert spec.reducers[0].method == "pca"
    schema = json_schema()
    assert schema["title"] == "ReportSpec" and "dataset" in schema["properties"]


def test_example_specs_validate():
    root = Path(__file__).parents[1] / "examples"
    specs = sorted(root.glob("*.yaml"))
    assert specs, "examples/ has no specs"
    for p in specs:
        assert isinstance(load_spec(p), ReportSpec)

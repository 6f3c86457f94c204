"""Checks: summary numbers -> pass/fail results (quality gates for CI), and JUnit XML.

Works on the summary.json structure, so ``reportgen check summary.json`` re-evaluates gates
without recomputing anything.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError
from .results import CheckResult


def read_summary(path: str | os.PathLike, *, what: str = "summary") -> dict:
    try:
        data = json.loads(Path(os.fspath(path)).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what}: {path} is not a readable summary.json ({str(exc)[:100]})") from None
    if not isinstance(data, dict) or data.get("generator") != "reportgen" or "models" not in data:
        raise DataError(f"{what}: {path} is not a reportgen summary.json")
    return data


def _layers(summary: dict) -> Iterable[tuple[str, str, dict]]:
    for m in summary.get("models", []):
        for l in m.get("layers", []):
            yield m["name"], l["layer"], l.get("metrics", {})


def _fmt(v: object) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def evaluate(summary: dict, checks: list, *, baseline: dict | None = None) -> list[CheckResult]:
    """Evaluate every check against every layer it names; ``baseline`` is the summary of a reference
    build for ``max_drop`` checks without a ``baseline`` file of their own."""
    results = []
    layers = list(_layers(summary))
    for i, c in enumerate(checks):
        c = c if isinstance(c, dict) else c.model_dump(mode="json")
        matched = [
            (m, l, met) for m, l, met in layers if (c.get("model") in (None, m)) and (c.get("layer") in (None, l))
        ]
        label = c.get("name") or c["metric"]
        if c.get("layer") is None and any(c["metric"] in met for _, _, met in matched):
            # a metric measured on some layers only (the audit's, on the audit layer): a check that
            # names no layer applies where it is measured
            matched = [(m, l, met) for m, l, met in matched if c["metric"] in met]
        if not matched:
            results.append(
                CheckResult(
                    label,
                    c["metric"],
                    c.get("model") or "*",
                    c.get("layer") or "*",
                    None,
                    None,
                    False,
                    f"checks[{i}]: no layer matches model={c.get('model') or '*'} layer={c.get('layer') or '*'}",
                )
            )
            continue
        base = None
        if c.get("max_drop") is not None:
            base = read_summary(c["baseline"], what=f"checks[{i}].baseline") if c.get("baseline") else baseline
            if base is None and c.get("min") is None and c.get("max") is None:
                # a regression gate with nothing to compare against (the first run on main): skipped, said so
                for model, layer, met in matched:
                    results.append(
                        CheckResult(
                            label,
                            c["metric"],
                            model,
                            layer,
                            met.get(c["metric"]),
                            None,
                            True,
                            (
                                f"{model}/{layer}: {c['metric']} = {_fmt(met.get(c['metric']))}; skipped: no baseline "
                                "given (--baseline)"
                            ),
                            skipped=True,
                        )
                    )
                continue
        for model, layer, met in matched:
            value = met.get(c["metric"])
            bounds = []
            ok = value is not None
            why = "" if ok else "metric not available for this layer"
            if ok and c.get("min") is not None:
                bounds.append(f">= {c['min']:g}")
                ok &= value >= c["min"]
            if ok and c.get("max") is not None:
                bounds.append(f"<= {c['max']:g}")
                ok &= value <= c["max"]
            bval = None
            if c.get("max_drop") is not None:
                bounds.append(f"drop <= {c['max_drop']:g}")
                if base is None:
                    ok, why = False, "max_drop needs a baseline (checks[].baseline or --baseline)"
                else:
                    bmet = next((bm for bm_model, bl, bm in _layers(base) if bm_model == model and bl == layer), None)
                    bval = None if bmet is None else bmet.get(c["metric"])
                    if bval is None:
                        ok, why = False, f"the baseline has no {c['metric']} for {model}/{layer}"
                    elif ok:
                        ok &= (bval - value) <= c["max_drop"] + 1e-12
            msg = f"{model}/{layer}: {c['metric']} = {_fmt(value)}" + (
                f" (baseline {_fmt(bval)}, drop {_fmt(bval - value)})" if bval is not None and value is not None else ""
            )
            msg += f"; required {' and '.join(bounds)}" + (f"; {why}" if why else "")
            results.append(CheckResult(label, c["metric"], model, layer, value, bval, bool(ok), msg))
    return results


def junit_xml(results: list[CheckResult], *, suite: str = "reportgen checks") -> str:
    """JUnit XML (one test case per check and layer), as CI systems display it."""
    failures = sum(not r.passed for r in results)
    skipped = sum(r.skipped for r in results)
    root = ET.Element("testsuites", name="reportgen", tests=str(len(results)), failures=str(failures))
    ts = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(results)), failures=str(failures), errors="0", skipped=str(skipped)
    )
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=f"reportgen.{r.model}.{r.layer}", name=r.name)
        message = r.message + (f"; evidence: report.html{r.evidence}" if r.evidence else "")
        if r.skipped:
            ET.SubElement(tc, "skipped", message=message)
        elif not r.passed:
            f = ET.SubElement(tc, "failure", message=message, type="CheckFailed")
            f.text = message
        ET.SubElement(tc, "system-out").text = message
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

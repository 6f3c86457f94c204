"""The data audit: galleries of likely label errors, duplicate and near-duplicate pairs, outliers."""

from __future__ import annotations

from typing import Any

from ..analyses.audit import LABEL_THRESHOLD, AuditFinding
from .base import Section
from .view import View


class AuditSection(Section):
    name = "audit"
    template = "sections/audit.html"

    def context(self, f: AuditFinding, view: View) -> dict[str, Any] | None:
        names = view.class_names
        g = view.gallery_size * 3
        issues = [
            view.sample(r, suggested=names[f.suggested[r]], quality=float(f.quality[r])) for r in f.label_issues[:g]
        ]
        dups = [[view.sample(r) for r in grp[:4]] for grp in f.duplicate_groups[: view.gallery_size]]
        near = [
            {"a": view.sample(a), "b": view.sample(b), "d": float(d), "mirrored": bool(m)}
            for (a, b), d, m in zip(f.near_pairs[: view.gallery_size * 2], f.near_distances, f.mirrored)
        ]
        outl = [view.sample(r) for r in f.outliers[:g]]
        return {
            "issues": issues,
            "n_issues": len(f.label_issues),
            "rate": len(f.label_issues) / f.n,
            "threshold": LABEL_THRESHOLD,
            "k": f.k,
            "dups": dups,
            "n_groups": len(f.duplicate_groups),
            "n_dups": f.duplicates,
            "has_hashes": f.has_hashes,
            "near": near,
            "mirrors": f.mirrors,
            "n_near": len(f.near_pairs),
            "near_threshold": f.near_threshold,
            "calibration": f.calibration,
            "budget": dict(f.twin_budget),
            "outliers": outl,
            "n_outliers": len(f.outliers),
            "cut": f.outlier_cut,
        }

"""Command line: argv -> exit status. Parsing and error printing only; work lives in the stages.

Exit codes: 0 success, 1 runtime error (data, model, output), 2 usage or invalid spec,
3 a quality check failed (report still written), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from ._version import __version__
from .errors import ExitStatus, ReportgenError, SpecError, UsageError

if TYPE_CHECKING:
    from .pipeline import ProcessHooks
    from .results import CheckResult

EPILOG = """exit codes: 0 ok · 1 runtime error (data, model, output) · 2 usage or invalid spec ·
3 a quality check failed · 130 interrupted"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other usage error
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="log stage timings (-vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    common.add_argument("--traceback", action="store_true", help="show the full traceback on errors")

    p = _Parser(
        prog="reportgen",
        description=(
            "Turn a trained image model and a dataset into a self-contained HTML report of what its layers see."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    b = add("build", "Build the report a spec describes (report.html, summary.json, figures/).")
    b.add_argument("spec", type=Path, help="YAML spec file")
    b.add_argument("--out", type=Path, help="output folder (overrides output.dir)")
    b.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set dataset.limit=500 (repeatable)",
    )
    b.add_argument("--no-cache", action="store_true", help="recompute embeddings even when cached")
    b.add_argument(
        "--cache-dir", type=Path, help="embedding cache folder (default: spec cache_dir or ~/.cache/reportgen)"
    )
    b.add_argument("--max-samples", type=int, help="refuse to use more than N samples (a guard for CI)")
    b.add_argument("--baseline", type=Path, help="summary.json of a reference build, for max_drop checks")
    _engine_flags(b)

    x = add(
        "extract",
        (
            "Extract and store the embeddings a spec names (no report): e.g. on a Ray cluster, then 'reportgen build' "
            "anywhere."
        ),
    )
    x.add_argument("spec", type=Path, help="YAML spec file")
    x.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field (repeatable)",
    )
    x.add_argument("--no-cache", action="store_true", help="recompute embeddings even when cached")
    x.add_argument(
        "--cache-dir", type=Path, help="embedding cache folder (default: spec cache_dir or ~/.cache/reportgen)"
    )
    x.add_argument("--max-samples", type=int, help="refuse to use more than N samples")
    _engine_flags(x)

    k = add("check", "Evaluate checks again on a summary.json, without recomputing (exit 3 when one fails).")
    k.add_argument("summary", type=Path, help="summary.json of a build")
    k.add_argument("--baseline", type=Path, help="summary.json of a reference build, for max_drop checks")
    k.add_argument("--spec", type=Path, help="take the checks from this spec instead of the summary")
    k.add_argument("--junit", type=Path, help="also write the results as JUnit XML")

    v = add("validate", "Check a spec and list every error with its YAML path and line.")
    v.add_argument("spec", type=Path)
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    add("schema", "Print the JSON Schema of the spec format.")

    l = add("layers", "List a model's modules: index, name, type, output shape, parameters.")
    l.add_argument("model", help="a timm model name, or a spec file (its first model, or --model)")
    l.add_argument("--input-size", type=int, help="input side in pixels for the dry forward pass")
    l.add_argument("--model", dest="model_name", help="which model of the spec")
    l.add_argument("--weights", help="packaged weights (e.g. efficientnet_lite0)")

    d = add("demo", "Build the bundled demo (EfficientNet-Lite0 packaged weights on scikit-learn digits).")
    d.add_argument("--out", type=Path, default=Path("reportgen-demo"), help="output folder (default: ./reportgen-demo)")
    d.add_argument("--cache-dir", type=Path)

    e = add(
        "export-projector",
        "Write a spec's embeddings as a TensorBoard projector folder (tensors, metadata.tsv, sprite, config).",
    )
    e.add_argument("spec", type=Path)
    e.add_argument("--out", type=Path, required=True, help="folder to write (tensorboard --logdir FOLDER opens it)")
    e.add_argument("--binary", action="store_true", help="float32 .bytes tensors instead of TSV")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--cache-dir", type=Path)

    c = add("cache", "Manage the embedding cache.")
    c.add_argument("action", choices=["clear", "path"])
    c.add_argument("--cache-dir", type=Path)
    return p


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], help="where extraction runs (overrides execution.engine)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto or ray://head:10001 (overrides execution.address)")


def _engine_overrides(args: argparse.Namespace) -> list[str]:
    out = list(getattr(args, "overrides", []) or [])
    if getattr(args, "engine", None):
        out.append(f"execution.engine={args.engine}")
    if getattr(args, "address", None):
        out.append(f"execution.address={args.address}")
    return out


def _setup_logging(args: argparse.Namespace, stderr: TextIO) -> None:
    level = (
        logging.WARNING
        if args.quiet
        else (logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING)
    )
    root = logging.getLogger("reportgen")
    root.handlers[:] = []
    h = logging.StreamHandler(stderr)
    h.setFormatter(logging.Formatter("reportgen: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)
    root.propagate = False


def _hooks() -> ProcessHooks:
    """The CLI owns its process: it may reset the per-stage peak-memory mark and trim the heap."""
    from .pipeline import ProcessHooks

    return ProcessHooks(reset_peaks=True, trim_memory=True)


def _process_setup() -> None:
    """Process-wide settings only the command line makes (the Python API never does): numba's
    compiled kernels (UMAP) cached under the user's cache folder, so later runs skip most of the
    ~30 s compilation even where site-packages is read-only; matplotlib without a display."""
    from .store.files import default_cache_dir

    os.environ.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir() / "numba"))
    os.environ.setdefault("MPLBACKEND", "Agg")


def _cmd_build(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .pipeline import build
    from .specification import load_spec

    spec = load_spec(args.spec, overrides=_engine_overrides(args))
    if args.max_samples is not None and args.max_samples <= 0:
        raise UsageError("--max-samples must be > 0")
    result = build(
        spec,
        use_cache=not args.no_cache,
        cache_dir=args.cache_dir,
        max_samples=args.max_samples,
        progress=not args.quiet,
        output_dir=args.out,
        baseline=args.baseline,
        hooks=_hooks(),
    )
    if not args.quiet and result.output_dir is not None:
        print(f"report: {result.output_dir / 'report.html'} ({result.html_bytes / 1e6:.1f} MB)", file=out)
    return _report_checks(result.checks, out, err, quiet=args.quiet)


def _report_checks(results: Sequence[CheckResult], out: TextIO, err: TextIO, *, quiet: bool = False) -> int:
    failed = [r for r in results if not r.passed]
    if results and not quiet:
        print(f"checks: {len(results) - len(failed)} of {len(results)} passed", file=out)
    for r in failed:
        print(f"reportgen: check failed: {r.name}: {r.message}", file=err)
    return ExitStatus.CHECKS_FAILED if failed else ExitStatus.OK


def _cmd_extract(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .pipeline import Stages, extract_embeddings
    from .specification import load_spec

    spec = load_spec(args.spec, overrides=_engine_overrides(args))
    if args.max_samples is not None and args.max_samples <= 0:
        raise UsageError("--max-samples must be > 0")
    stages = Stages(_hooks())
    ds, sel, runs = extract_embeddings(
        spec,
        use_cache=not args.no_cache,
        cache_dir=args.cache_dir,
        max_samples=args.max_samples,
        progress=not args.quiet,
        stages=stages,
    )
    for r in runs:
        e = r.embeddings
        where = f"{e.path}" if e.path else "input file"
        how = {
            "cache": "already in the cache",
            "computed": f"computed ({e.forward_calls} forward passes)",
            "input": "given as input",
        }[e.origin]
        print(f"{r.model.name}: {len(e.ids):,} samples x {len(e.layers)} layer(s), {how}: {where}", file=out)
    return ExitStatus.OK


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .checks import evaluate, junit_xml, read_summary
    from .specification import load_spec

    summary = read_summary(args.summary)
    if args.spec:
        checks = list(load_spec(args.spec).checks)
    else:
        checks = summary.get("check_specs") or []
    if not checks:
        raise UsageError(f"{args.summary} records no checks; give --spec with a checks: section")
    base = read_summary(args.baseline, what="--baseline") if args.baseline else None
    import dataclasses

    from .analyses import metric_anchor

    results = [
        dataclasses.replace(r, evidence=metric_anchor(r.metric, r.model, r.layer))
        for r in evaluate(summary, checks, baseline=base)
    ]
    for r in results:
        print(f"{'pass' if r.passed else 'FAIL'}  {r.name}  {r.message}", file=out)
    if args.junit:
        from .store.files import atomic_write_bytes

        atomic_write_bytes(args.junit, junit_xml(results).encode("utf-8"))
    return _report_checks(results, out, err, quiet=args.quiet)


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .pipeline import build
    from .resources import demo_spec
    from .specification import load_spec

    spec = load_spec(demo_spec())
    result = build(spec, cache_dir=args.cache_dir, progress=not args.quiet, output_dir=args.out, hooks=_hooks())
    assert result.output_dir is not None, "a build that writes"
    print(f"demo report: {(result.output_dir / 'report.html').resolve()}", file=out)
    return ExitStatus.OK


def _cmd_layers(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .embed.layers import list_layers
    from .models import load_model
    from .specification import ModelSpec, load_spec

    target = args.model
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        spec = load_spec(target)
        if not spec.models:
            raise UsageError(f"{target} has no models (its dataset holds precomputed embeddings); nothing to list")
        models = {m.name: m for m in spec.models}
        name = args.model_name or spec.models[0].name
        if name not in models:
            raise UsageError(f"--model {name!r} is not in {target} (models: {', '.join(models)})")
        mspec = models[name]
    else:
        mspec = ModelSpec(name="model", timm=target, weights=args.weights, layers=[0])
    loaded = load_model(mspec)
    rows = list_layers(loaded, input_size=args.input_size)
    w = max(len(r.name) for r in rows)
    tw = max(len(r.type) for r in rows)
    print(f"{'idx':>4}  {'name':<{w}}  {'type':<{tw}}  {'output shape':<22} {'params':>10}", file=out)
    for r in rows:
        print(f"{r.index:>4}  {r.name:<{w}}  {r.type:<{tw}}  {r.output_shape:<22} {r.params:>10,}", file=out)
    return ExitStatus.OK


def _cmd_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import numpy as np

    from .pipeline import extract_embeddings
    from .projector import export_projector
    from .specification import load_spec

    spec = load_spec(args.spec, overrides=args.overrides)
    ds, sel, runs = extract_embeddings(spec, cache_dir=args.cache_dir, progress=not args.quiet)
    base = runs[0].embeddings
    tensors = {f"{r.model.name}/{name}": np.asarray(x) for r in runs for name, x in r.embeddings.layers.items()}
    meta = {"label": [ds.class_names[int(y)] for y in base.labels], "id": list(base.ids)}
    notes = export_projector(
        args.out, tensors, meta, np.asarray(base.thumbnails) if ds.has_images else None, binary=args.binary
    )
    for n in notes:
        print(f"reportgen: note: {n}", file=err)
    print(
        (
            f"projector: {args.out} ({len(tensors)} tensor(s), {len(base.ids)} samples); run: tensorboard --logdir "
            f"{args.out}"
        ),
        file=out,
    )
    return ExitStatus.OK


def _cmd_cache(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .store.embeddings import EmbeddingStore

    store = EmbeddingStore(args.cache_dir)
    if args.action == "path":
        print(store.root, file=out)
    else:
        n = store.clear()
        print(
            (
                f"removed {n} embedding entr{'y' if n == 1 else 'ies'} and every cached map, graph, probe and figure "
                f"from {store.root}"
            ),
            file=out,
        )
    return ExitStatus.OK


COMMANDS = {
    "build": _cmd_build,
    "extract": _cmd_extract,
    "check": _cmd_check,
    "export-projector": _cmd_export,
    "demo": _cmd_demo,
    "layers": _cmd_layers,
    "cache": _cmd_cache,
}


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Entry point: returns the exit status (``ExitStatus``); never raises for user errors."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv
    try:
        _process_setup()
        parser = _parser()
        try:
            import contextlib

            with contextlib.redirect_stdout(out):
                args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        _setup_logging(args, err)
        if getattr(args, "version", False):
            print(f"reportgen {__version__}", file=out)
            return ExitStatus.OK
        if args.command is None:
            parser.print_help(out)
            return ExitStatus.USAGE
        if args.command == "schema":
            from .catalog import json_schema

            print(json.dumps(json_schema(), indent=2), file=out)
            return ExitStatus.OK
        if args.command == "validate":
            from .catalog import check_names
            from .specification import load_spec

            try:
                spec = load_spec(args.spec, overrides=args.overrides)
                check_names(spec)
            except SpecError as exc:
                for line in exc.errors:
                    print(f"reportgen: error: {line}", file=err)
                return ExitStatus.USAGE
            print(
                (
                    f"{args.spec}: valid ({len(spec.models)} model(s), {sum(len(m.layers) for m in spec.models)} "
                    f"layer(s), reducers: {', '.join(r.method for r in spec.reducers)})"
                ),
                file=out,
            )
            return ExitStatus.OK
        return int(COMMANDS[args.command](args, out, err))
    except ReportgenError as exc:
        if show_tb:
            traceback.print_exc(file=err)
        print(f"reportgen: error: {exc.message}", file=err)
        return int(exc.exit_status)
    except BrokenPipeError:  # `reportgen layers ... | head`: the reader left, not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return int(ExitStatus.OK)
    except KeyboardInterrupt:
        print("reportgen: interrupted; nothing was written", file=err)
        return int(ExitStatus.INTERRUPTED)
    except MemoryError:
        print("reportgen: error: out of memory; lower dataset.limit or batch_size", file=err)
        return int(ExitStatus.ERROR)
    except Exception as exc:  # a bug: say so in one line, full story with --traceback
        if show_tb:
            traceback.print_exc(file=err)
        else:
            print(
                f"reportgen: internal error: {type(exc).__name__}: {exc} (rerun with --traceback and report it)",
                file=err,
            )
        return int(ExitStatus.ERROR)

"""Reading lm-evaluation-harness 0.4 task YAMLs: ``include:`` of a base file (the
including file's keys win), ``!function utils.fn`` from a Python file beside the YAML,
groups of tasks with their aggregation, and local data (``dataset_path: json|csv|parquet``
with ``dataset_kwargs.data_files``). A key lmboard does not read is a one-line error that
names it and the file, never ignored: a silently ignored key would change the numbers."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError

TASK_KEYS = {
    "task", "task_alias", "tag", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text", "doc_to_target",
    "doc_to_choice", "description", "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot",
    "metric_list", "output_type", "generation_kwargs", "repeats", "filter_list", "metadata",
    "should_decontaminate", "doc_to_decontamination_query", "process_results",
}
GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata", "tag"}
FEWSHOT_KEYS = {"sampler", "split", "samples", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
                "fewshot_delimiter", "process_docs"}
OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "generate_until")
LOCAL_FORMATS = ("json", "csv", "parquet")


@dataclass
class Source:
    """Where a config came from: its files (the YAML, its includes, the Python files its
    ``!function`` tags load) and their hashes, which go into the run's identity."""

    path: Path
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256

    def add(self, path: Path) -> None:
        self.files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class TaskSpec:
    name: str
    config: dict[str, Any]  # the merged YAML: lm-eval's keys, !function values as callables
    source: Source


@dataclass
class GroupSpec:
    name: str
    tasks: list[TaskSpec | GroupSpec]
    aggregate: list[dict]  # aggregate_metric_list
    alias: str | None
    source: Source


def _function(base: Path, qual: str, source: Source, where: str):
    mod, _, fn = qual.rpartition(".")
    path = (base / f"{mod.replace('.', '/')}.py").resolve()
    if not mod or not path.is_file():
        raise UsageError(f"{where}: !function {qual}: no {path.name if mod else 'module'} beside the YAML ({base})")
    name = f"lmboard_harness_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - the user's file: say where it broke
            raise UsageError(f"{path}: failed to load ({type(e).__name__}: {e})") from e
        sys.modules[name] = module
    source.add(path)
    if not hasattr(module, fn):
        raise UsageError(f"{where}: !function {qual}: {path} has no {fn!r}")
    return getattr(module, fn)


def load_yaml(path: Path, source: Source, seen: tuple[Path, ...] = ()) -> dict:
    """The file's keys over its includes' (lm-eval's load_yaml), ``!function`` resolved."""
    import yaml

    path = path.expanduser().resolve()
    if path in seen:
        raise UsageError(f"{path}: include cycle ({' -> '.join(p.name for p in (*seen, path))})")
    if not path.is_file():
        raise UsageError(f"{seen[-1] if seen else '--task'}: no such file {path}")
    source.add(path)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: _function(
        path.parent, loader.construct_scalar(node), source, str(path)))
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - SafeLoader + !function
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UsageError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"{path}: expected a mapping of task keys, got {type(cfg).__name__}")
    includes = cfg.pop("include", None)
    if includes is None:
        return cfg
    merged: dict = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        base = load_yaml(path.parent / inc if not Path(inc).is_absolute() else Path(inc), source, (*seen, path))
        base.pop("task_list", None)
        merged.update(base)
    merged.update(cfg)
    return merged


def _check_keys(cfg: dict, allowed: set[str], path: Path, what: str) -> None:
    for k in cfg:
        if k not in allowed:
            raise UsageError(f"{path}: key {k!r} is not supported by lmboard's {what} reader "
                             f"(it reads: {', '.join(sorted(allowed))})")


def index(paths: list[Path]) -> dict[str, Path]:
    """Task and group name -> the YAML that defines it, over files and folders (recursive)."""
    import yaml

    found: dict[str, Path] = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*.y*ml") if "__pycache__" not in x.parts)
        for f in files:
            try:
                # names only: !function tags are not resolved here
                text = f.read_text(encoding="utf-8")
                doc = yaml.load(text, Loader=_names_loader())  # noqa: S506
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(doc, dict):
                name = doc.get("group") if "group" in doc and "task" in doc and isinstance(doc["task"], list) \
                    else doc.get("task")
                if isinstance(name, str):
                    found.setdefault(name, f)
    return found


@functools.cache
def _names_loader():
    """A SafeLoader that reads ``!function`` as its text (for finding names)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return Loader


def resolve(task: str, include: list[Path]) -> TaskSpec | GroupSpec:
    """``--task``: a YAML file, or a task or group name found under ``--include-path``."""
    p = Path(task)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise UsageError(f"--task: no such file {p}")
        return load_entry(p, index(include + [p.parent]))
    names = index(include)
    if task not in names:
        where = ", ".join(map(str, include)) or "no --include-path given"
        raise UsageError(f"--task {task}: no task or group of that name in {where}")
    return load_entry(names[task], names)


def load_entry(path: Path, names: dict[str, Path], seen: tuple[str, ...] = ()) -> TaskSpec | GroupSpec:
    source = Source(path.resolve())
    cfg = load_yaml(path, source)
    if "group" in cfg and isinstance(cfg.get("task"), list):
        _check_keys(cfg, GROUP_KEYS, path, "group")
        members: list[TaskSpec | GroupSpec] = []
        for t in cfg["task"]:
            if isinstance(t, str):
                if t in seen or t == cfg["group"]:
                    raise UsageError(f"{path}: group {cfg['group']!r} includes itself through {t!r}")
                if t not in names:
                    raise UsageError(f"{path}: task {t!r} of group {cfg['group']!r} is not defined in "
                                     f"{path.parent} or --include-path")
                members.append(load_entry(names[t], names, (*seen, cfg["group"])))
            elif isinstance(t, dict):
                _check_keys(t, TASK_KEYS, path, "task")
                members.append(_task(t, path, Source(path.resolve(), dict(source.files))))
            else:
                raise UsageError(f"{path}: group {cfg['group']!r}: a task must be a name or a mapping")
        agg = cfg.get("aggregate_metric_list") or []
        for a in agg if isinstance(agg, list) else [agg]:
            if not isinstance(a, dict) or "metric" not in a or a.get("aggregation", "mean") != "mean":
                raise UsageError(f"{path}: aggregate_metric_list: each entry needs a metric and aggregation: mean")
        return GroupSpec(cfg["group"], members, agg if isinstance(agg, list) else [agg], cfg.get("group_alias"),
                         source)
    _check_keys(cfg, TASK_KEYS, path, "task")
    return _task(cfg, path, source)


def _task(cfg: dict, path: Path, source: Source) -> TaskSpec:
    if not isinstance(cfg.get("task"), str):
        raise UsageError(f"{path}: no 'task' name")
    out = cfg.get("output_type", "generate_until")
    if out not in OUTPUT_TYPES:
        raise UsageError(f"{path}: output_type {out!r} is not supported (lmboard runs {', '.join(OUTPUT_TYPES)})")
    if cfg.get("process_results") is not None:
        raise UsageError(f"{path}: key 'process_results' is not supported (lmboard computes the metrics of "
                         "metric_list itself)")
    fs = cfg.get("fewshot_config") or {}
    if not isinstance(fs, dict):
        raise UsageError(f"{path}: fewshot_config must be a mapping")
    _check_keys(fs, FEWSHOT_KEYS, path, "fewshot_config")
    if fs.get("sampler", "default") not in ("default", "first_n"):
        raise UsageError(f"{path}: fewshot_config.sampler {fs['sampler']!r} is not supported (default, first_n)")
    if cfg.get("dataset_path") not in LOCAL_FORMATS:
        raise UsageError(f"{path}: dataset_path {cfg.get('dataset_path')!r} is a hub dataset; lmboard reads local "
                         f"data only: write dataset_path: json (or csv, parquet) with dataset_kwargs: data_files: "
                         f"{{test: path/to/file.jsonl}}")
    return TaskSpec(cfg["task"], cfg, source)


def data_files(task: TaskSpec, path: Path) -> dict[str, list[Path]]:
    """Split -> its local files (lm-eval passes data_files to datasets.load_dataset, which
    reads a relative path from the working directory; lmboard also looks beside the YAML)."""
    kw = task.config.get("dataset_kwargs") or {}
    files = kw.get("data_files") if isinstance(kw, dict) else None
    if files is None:
        raise UsageError(f"{path}: dataset_kwargs.data_files is needed with dataset_path: {task.config['dataset_path']}")
    if not isinstance(files, dict):
        files = {"train": files}
    out = {}
    for split, fs in files.items():
        out[split] = []
        for f in fs if isinstance(fs, list) else [fs]:
            p = Path(f).expanduser()
            if not p.is_absolute() and not p.exists() and (path.parent / p).exists():
                p = path.parent / p
            if not p.is_file():
                raise UsageError(f"{path}: data file {f} ({split}) not found (looked in {Path.cwd()} and {path.parent})")
            out[split].append(p.resolve())
    return out

"""`lmboard eval MODEL --task task.yaml` (or a folder of YAMLs, or `--include-path DIR`
with task and group names): lm-evaluation-harness task files run on any backend."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from lmboard.cli.common import (
    check_out_dir,
    check_positive,
    load_lm,
    open_store,
    out,
    progress_bar,
    split_list,
)
from lmboard.errors import UsageError
from lmboard.lm import Capability, ModelSpec
from lmboard.models.registry import require_backend
from lmboard.parallel import world

FILES = "Task files and answers in words (--task FILE.yaml, a folder, or names under --include-path; --by generate)"


@dataclass(frozen=True)
class TaskFileFlags:
    include_path: Annotated[list[Path] | None, typer.Option(
        "--include-path", help="Folder of task YAMLs (repeatable), as lm-eval's --include_path", rich_help_panel=FILES)] = None
    max_new_tokens: Annotated[int | None, typer.Option(
        help="New tokens per answer (task files: default the YAML's max_gen_toks, else 256; exams --by generate: "
             "48, 1024 where the chat template thinks)", rich_help_panel=FILES)] = None
    strip_thinking: Annotated[bool | None, typer.Option(
        "--strip-thinking/--keep-thinking", help="Remove <think>...</think> (and an unclosed trace) before reading an "
        "answer (default: on where the chat template has a thinking block)", rich_help_panel=FILES)] = None
    fewshot_seed: Annotated[int, typer.Option(help="Seed of the few-shot sampler (lm-eval's --fewshot_random_seed)",
                                              rich_help_panel=FILES)] = 1234


def is_task_file(task: str, flags: TaskFileFlags) -> bool:
    """A YAML, names under --include-path, or a folder of YAMLs (a built-in task's name wins
    over a folder of that name in the working directory)."""
    from lmboard.registry import TASKS

    if task.endswith((".yaml", ".yml")) or flags.include_path:
        return True
    return Path(task).is_dir() and TASKS.find(task) is None


def entries(task: str, include: list[Path]) -> list:
    """The tasks and groups ``--task`` names: files, a folder's top-level entries, names."""
    from lmboard.tasks.harness.config import GroupSpec, index, load_entry, resolve
    from lmboard.tasks.harness.run import leaves

    if Path(task).is_dir():
        names = index([Path(task), *include])
        found = [load_entry(p, names) for n, p in names.items() if Path(task) in p.parents]
        inside = {t.name for e in found if isinstance(e, GroupSpec) for t in leaves(e)}
        return [e for e in found if e.name not in inside] or _none(task)
    return [resolve(t, include) for t in split_list(task)]


def _none(task: str) -> list:
    raise UsageError(f"--task {task}: no task YAML in this folder")


def harness(spec: ModelSpec, task: str, shots: int | None, limit: int | None, chat: bool, out_dir: Path | None,
            db: Path | None, quiet: bool, threads: int | None, flags: TaskFileFlags) -> None:
    from lmboard.report.harness import harness_table, results_doc, write_harness_files
    from lmboard.tasks.harness.run import HarnessSettings, group_results, leaves, prepare, run_task

    check_positive(limit, "--limit")
    check_positive(flags.max_new_tokens, "--max-new-tokens")
    if shots is not None and shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {shots})")
    settings = HarnessSettings(limit, shots, chat, flags.fewshot_seed, flags.max_new_tokens)
    found = entries(task, list(flags.include_path or []))
    tasks = {t.name: t for e in found for t in leaves(e)}
    kinds = {t.config.get("output_type", "generate_until") for t in tasks.values()}
    needs = [Capability.TOKENIZE] + ([Capability.SCORE] if kinds - {"generate_until"} else []) + (
        [Capability.GENERATE] if "generate_until" in kinds else [])
    for cap in needs:
        require_backend(spec, cap, f"--task {task} ({', '.join(sorted(kinds))})")
    prepared = {n: prepare(t, settings) for n, t in tasks.items()}  # bad templates and data fail here
    out_path = out_dir or Path("results") / spec.display_name / "tasks"
    main = world().main
    if main:
        check_out_dir(out_path)
    store = open_store(db, quiet) if main else None
    lm = load_lm(spec, quiet, threads, needs=tuple(c for c in needs if c == Capability.SCORE))
    if chat and not lm.has_chat_template():
        raise UsageError(f"--chat: model {spec.display_name} has no chat template")
    if "generate_until" in kinds:
        from lmboard.tasks.exam_gen import thinks

        strip = flags.strip_thinking if flags.strip_thinking is not None else thinks(lm)
        settings = dataclasses.replace(settings, strip_thinking=strip)
        prepared = {n: dataclasses.replace(p, strip_thinking=strip) for n, p in prepared.items()}
    results = {}
    for name, p in prepared.items():
        with progress_bar(f"{name} {spec.display_name}", quiet or not main) as update:
            r = run_task(lm, p, settings, store, update)
        if r is not None:
            results[name] = r
    if not main:
        return
    groups = {}
    from lmboard.tasks.harness.config import GroupSpec

    for e in found:
        if isinstance(e, GroupSpec):
            groups.update(group_results(e, {n: {"metrics": r["metrics"], "n": r["prepared"].n_docs}
                                            for n, r in results.items()}))
    doc = results_doc(found, results, groups, spec.canonical(), settings.key())
    path = write_harness_files(doc, results, out_path)
    if not quiet:
        out.print(harness_table(doc))
        out.print(f"results: {path}", markup=False)

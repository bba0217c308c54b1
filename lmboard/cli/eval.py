"""`lmboard eval`: a multiple-choice exam (MMLU, CMMLU, C-Eval) or a classification."""

from __future__ import annotations

from pathlib import Path

import typer

from lmboard.cli.common import (
    DB,
    QUIET,
    THREADS,
    builtin_data,
    check_out_dir,
    check_positive,
    load_lm,
    model_spec,
    open_store,
    out,
    parse_budget,
    parse_labels,
    parse_margin,
    progress_bar,
    split_list,
)
from lmboard.engine import EngineSettings
from lmboard.errors import UsageError
from lmboard.lm import Capability, ModelSpec
from lmboard.models.registry import backend_capabilities, require_backend
from lmboard.parallel import world
from lmboard.registry import TASKS

EXAM = "Exam options (--task mmlu, cmmlu, ceval)"
CLS = "Classification options (--task classify)"
ROUTED = "Routed-benchmark options (--task shopbench)"
ROUTES_OPT = typer.Option(None, help="Route file (JSON or YAML), tried before the built-in routes",
                          rich_help_panel=ROUTED)
PARSE_OPT = typer.Option("official", help="official (the kit's parsers.py 0.1.1) or lenient (the seed's)",
                         rich_help_panel=ROUTED)
MC_BY_OPT = typer.Option("generate", help="Multiple choice by generate, or loglik (option numbers' log-likelihood)",
                         rich_help_panel=ROUTED)
RESPONSES_OPT = typer.Option(None, help="Score these answers (JSONL: index or input_field, response); no model runs",
                             rich_help_panel=ROUTED)
EMBEDDER_OPT = typer.Option(None, help="METRIC=PATH: a local sentence-transformers model for a metric (repeatable)",
                            rich_help_panel=ROUTED)
ENGINE = "Scoring engine (speed only, except --recheck-margin)"
RECHECK_HELP = ("bf16/fp16: answer again on the float32 model the answers whose top two logits are closer than this: "
                "auto (exams: twice the largest bf16 error measured in the run; ShopBench's greedy answers: 0.05 at "
                "their closest decision), a number, or 0 (off)")


def eval_cmd(
    model: str = typer.Argument("smollm2", help="Model spec: smollm2, hf:PATH[,k=v...], openai:NAME@URL"),
    task: str = typer.Option("mmlu", help="mmlu, cmmlu, ceval, classify, shopbench (or a plugin task)"),
    data: Path | None = typer.Option(None, help="Data folder (a file for classify, shopbench); default: built-in sample"),
    shots: int | None = typer.Option(None, help="Few-shot examples per question (default: 5 for exams, 0 for classify)"),
    dtype: str | None = typer.Option(None, help="auto, float32, bfloat16, float16 (overrides the spec)"),
    out_dir: Path | None = typer.Option(None, "--out", help="Result folder (default results/<model>/)"),
    db: Path | None = DB,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
    subjects: str | None = typer.Option(None, help="Comma-separated subjects (default: all)", rich_help_panel=EXAM),
    limit: int | None = typer.Option(None, help="Questions per subject", rich_help_panel=EXAM),
    letter_token: str = typer.Option("spaced", help='spaced: " A" after the cue; bare: tokenizer("A")[-1]',
                                     rich_help_panel=EXAM),
    chat: bool = typer.Option(False, "--chat", help="Render through the model's chat template", rich_help_panel=EXAM),
    max_length: int | None = typer.Option(None, help="Context limit for prompts (default: the model's)",
                                          rich_help_panel=EXAM),
    show_subcategories: bool = typer.Option(False, "--subcategories", help="Show subcategories", rich_help_panel=EXAM),
    show_subjects: bool = typer.Option(False, "--per-subject", help="Show subjects", rich_help_panel=EXAM),
    text_column: str = typer.Option("text", help="The text column", rich_help_panel=CLS),
    label_column: str = typer.Option("label", help="The label column", rich_help_panel=CLS),
    labels: str | None = typer.Option(None, help='Label values and names: "0=负面,1=正面"', rich_help_panel=CLS),
    template: str | None = typer.Option(None, help="Prompt template with {labels} and {text}", rich_help_panel=CLS),
    train: Path | None = typer.Option(None, help="Training file for the shots", rich_help_panel=CLS),
    split: float | None = typer.Option(None, help="Train share when splitting --data (e.g. 0.8)", rich_help_panel=CLS),
    test_size: int | None = typer.Option(None, help="Cap the test split at N rows", rich_help_panel=CLS),
    seed: int = typer.Option(123, help="Split and shot seed", rich_help_panel=CLS),
    by: str = typer.Option("loglik", help="loglik or generate", rich_help_panel=CLS),
    normalize: str = typer.Option("none", help="none, tokens or chars (loglik)", rich_help_panel=CLS),
    tasks: str | None = typer.Option(None, help="Comma-separated task names (default: all)", rich_help_panel=ROUTED),
    routes: Path | None = ROUTES_OPT,
    parse: str = PARSE_OPT,
    mc_by: str = MC_BY_OPT,
    responses: Path | None = RESPONSES_OPT,
    embedder: list[str] | None = EMBEDDER_OPT,
    concurrency: int = typer.Option(8, help="Requests in flight for an endpoint", rich_help_panel=ROUTED),
    batch_tokens: str = typer.Option("auto", "--batch-tokens", help="Token budget per batch (all prompts' tokens), "
                                     "or auto", rich_help_panel=ENGINE),
    prefix_reuse: bool = typer.Option(True, help="Compute each shared few-shot prefix once", rich_help_panel=ENGINE),
    packed: bool = typer.Option(True, help="Packed forward for Llama-family models on CPU (off: transformers')",
                                rich_help_panel=ENGINE),
    recheck_margin: str = typer.Option("auto", help=RECHECK_HELP, rich_help_panel=ENGINE),
) -> None:
    """Score a model on an exam (MMLU, CMMLU, C-Eval), a classification task or a routed benchmark (ShopBench)."""
    kind = getattr(TASKS.get(task), "kind", "exam")
    spec = model_spec(model, dtype)
    check_positive(threads, "--threads")
    engine = EngineSettings(parse_budget(batch_tokens), prefix_reuse, packed, parse_margin(recheck_margin))
    common = {"out_dir": out_dir, "db": db, "quiet": quiet, "threads": threads}
    exam_only = {"--subjects": subjects, "--limit": limit, "--max-length": max_length, "--chat": chat or None}
    cls_only = {"--labels": labels, "--template": template, "--train": train, "--split": split, "--test-size": test_size}
    if kind == "routed":
        _only_for(task, {**exam_only, **cls_only, "--shots": shots})
        check_positive(concurrency, "--concurrency")
        _routed(spec, _shopbench_settings(data, tasks, routes, parse, mc_by, responses, embedder, engine),
                concurrency=concurrency, **common)
        return
    _only_for(task, {"--tasks": tasks, "--routes": routes, "--responses": responses, "--embedder": embedder or None,
                     "--parse": None if parse == "official" else parse, "--mc-by": None if mc_by == "generate" else mc_by})
    if kind == "classification":
        _only_for(task, exam_only)
        from lmboard.tasks.classify import ClassifyJob, ClassifySettings

        if data is None:
            raise UsageError("--data FILE is required for --task classify")
        settings = ClassifySettings(parse_labels(labels), template, shots or 0, by, normalize, seed)
        _classify(spec, ClassifyJob(data, settings, text_column, label_column, train, split, test_size, engine), **common)
        return
    _only_for(task, cls_only)
    from lmboard.tasks.exam import ExamSettings

    if letter_token not in ("spaced", "bare"):
        raise UsageError(f"--letter-token must be spaced or bare (got {letter_token!r})")
    check_positive(limit, "--limit")
    check_positive(max_length, "--max-length")
    settings = ExamSettings(task, data or builtin_data(task), split_list(subjects), limit,
                            5 if shots is None else shots, letter_token, chat, max_length, engine)
    _exam(spec, settings, show=(show_subcategories, show_subjects), **common)


def _only_for(task: str, given: dict[str, object]) -> None:
    """Options of the other kind of task are an error, not silently ignored."""
    for flag, value in given.items():
        if value is not None:
            raise UsageError(f"{flag} does not apply to --task {task}")


def _exam(spec: ModelSpec, settings, out_dir: Path | None, db: Path | None, quiet: bool, threads: int | None,
          show: tuple[bool, bool]) -> None:
    from lmboard.report.exam import write_exam_files
    from lmboard.report.tables import exam_table
    from lmboard.tasks.exam_run import load_questions, run_exam

    if settings.shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {settings.shots})")
    exam = TASKS.get(settings.task)()
    require_backend(spec, Capability.LOGITS, f"--task {settings.task} (next-token logits of the answer letters)")
    loaded = load_questions(exam, settings)  # bad data fails here, before the model loads
    out_path = out_dir or Path("results") / spec.display_name
    main = world().main  # under torchrun, rank 0 alone opens the store and writes files
    if main:
        check_out_dir(out_path)
    store = open_store(db, quiet) if main else None
    lm = load_lm(spec, quiet, threads)
    with progress_bar(f"{settings.task} {spec.display_name}", quiet or not main) as update:
        result = run_exam(exam, lm, settings, store, progress=update, loaded=loaded)
    if result is None:  # another rank: its results went to rank 0
        return
    acc = write_exam_files(result, exam, settings.data, out_path)
    store.finish_run(result.run_id, {k: v for k, v in acc.items() if k != "subjects"})
    if not quiet:
        out.print(exam_table(result.model, acc, *show))
        out.print(f"results: {out_path}  (run {result.run_id}{', resumed' if result.resumed else ''})")


def _classify(spec: ModelSpec, job, out_dir: Path | None, db: Path | None, quiet: bool, threads: int | None) -> None:
    from lmboard.finetune.provenance import check_not_trained_on
    from lmboard.report.classify import classify_summary, write_classify_files
    from lmboard.tasks.classify_run import load_job, run_classify, scoring_spec

    s = job.settings
    if s.by not in ("loglik", "generate"):
        raise UsageError(f"--by must be loglik or generate (got {s.by!r})")
    if s.normalize not in ("none", "tokens", "chars"):
        raise UsageError(f"--normalize must be none, tokens or chars (got {s.normalize!r})")
    if s.shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {s.shots})")
    if s.template is not None:
        if "{text}" not in s.template:
            raise UsageError("--template must contain {text} (where each review goes)")
        try:
            s.template.format(labels="", text="")
        except (KeyError, IndexError, ValueError) as e:
            raise UsageError(f"--template: only {{labels}} and {{text}} can be filled in (got {e!s}); "
                             "write a literal brace as {{ or }}") from None
    check_positive(job.test_size, "--test-size")
    require_backend(spec, Capability.LOGITS, f"--task classify --by {s.by} (runs on the model's weights)")
    test = load_job(job)[1]  # bad data fails here, before the model loads
    check_not_trained_on(spec, job.data, [e.line for e in test])
    out_path = out_dir or Path("results") / spec.display_name / "classify"
    main = world().main
    if main:
        check_out_dir(out_path)
    store = open_store(db, quiet) if main else None
    lm = load_lm(scoring_spec(spec, job), quiet, threads)
    with progress_bar(f"classify {spec.display_name}", quiet or not main) as update:
        result = run_classify(lm, job, store, update)
    if not main:
        return
    write_classify_files(result, out_path)
    if not quiet:
        for line in classify_summary(spec.display_name, result):
            out.print(line, markup=False)


def _routed(spec: ModelSpec, settings, concurrency: int, out_dir: Path | None, db: Path | None, quiet: bool,
            threads: int | None) -> None:
    from lmboard.report.shopbench import shopbench_table, write_shopbench_files
    from lmboard.tasks.shopbench_run import prepare, run_shopbench

    if settings.mc_by == "loglik":
        require_backend(spec, Capability.LOGITS, "--task shopbench --mc-by loglik (option log-likelihoods)")
    elif settings.responses is None and not backend_capabilities(spec) & {Capability.GENERATE, Capability.LOGITS}:
        require_backend(spec, Capability.GENERATE, "--task shopbench (generated answers)")
    prepared = prepare(settings)  # bad data, routes, responses or a missing metric package fail here
    out_path = out_dir or Path("results") / spec.display_name / "shopbench"
    main = world().main  # under torchrun, rank 0 alone opens the store and writes files
    if main:
        check_out_dir(out_path)
    store = open_store(db, quiet) if main else None
    lm = None if settings.responses is not None else load_lm(spec, quiet, threads)
    with progress_bar(f"shopbench {spec.display_name}", quiet or not main) as update:
        result = run_shopbench(lm, spec, settings, store, update, prepared, concurrency)
    if not main:
        return
    write_shopbench_files(result, out_path)
    if not quiet:
        out.print(shopbench_table(result))
        out.print(f"results: {out_path}  (run {result['run_id']}{', resumed' if result['resumed'] else ''})")


def _shopbench_settings(data: Path | None, tasks: str | None, routes: Path | None, parse: str, mc_by: str,
                        responses: Path | None, embedder: list[str] | None, engine: EngineSettings):
    from lmboard.metrics.shopbench import EMBEDDING_METRICS
    from lmboard.tasks.routes import load_routes
    from lmboard.tasks.shopbench import ShopBenchSettings
    from lmboard.tasks.shopbench_parse import PARSE_MODES

    if parse not in PARSE_MODES:
        raise UsageError(f"--parse must be official or lenient (got {parse!r})")
    if mc_by not in ("generate", "loglik"):
        raise UsageError(f"--mc-by must be generate or loglik (got {mc_by!r})")
    if responses is not None and mc_by == "loglik":
        raise UsageError("--responses scores given answers: --mc-by loglik would need the model")
    if responses is not None and not responses.is_file():
        raise UsageError(f"--responses: {responses}: no such file")
    embedders = {}
    for item in embedder or []:
        metric, sep, path = item.partition("=")
        if not sep or not path.strip():
            raise UsageError(f"--embedder: expected METRIC=PATH, got {item!r}")
        if metric.strip() not in EMBEDDING_METRICS:
            raise UsageError(f"--embedder: {metric.strip()!r} is not an embedding metric ({', '.join(EMBEDDING_METRICS)})")
        embedders[metric.strip()] = Path(path.strip())
    user_routes = tuple(load_routes(routes)) if routes else ()
    data = data or builtin_data("shopbench") / "sample.json"
    return ShopBenchSettings(Path(data), split_list(tasks), user_routes, str(routes) if routes else None, parse,
                             mc_by, responses, embedders, engine)

"""`lmboard eval`: a multiple-choice exam (MMLU, CMMLU, C-Eval), a classification or a routed
benchmark (ShopBench). Its flags come in typed groups (cli/options.py): the common ones,
then one group per kind of task; a group that does not apply to the task is an error
when given."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from lmboard.cli import options
from lmboard.cli.common import (
    builtin_data,
    check_out_dir,
    check_positive,
    err,
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
from lmboard.cli.eval_yaml import TaskFileFlags, harness, is_task_file
from lmboard.errors import UsageError
from lmboard.io import need_file
from lmboard.lm import Capability, ModelSpec
from lmboard.models.registry import backend_capabilities, require_backend
from lmboard.parallel import world
from lmboard.peak import peak_memory
from lmboard.registry import TASKS

EXAM = "Exam options (--task mmlu, cmmlu, ceval)"
CLS = "Classification options (--task classify)"
ROUTED = "Routed-benchmark options (--task shopbench)"
RUN = "How the model runs (the hf backend's spec keys; speed only, except --recheck-margin)"
RECHECK_HELP = ("spec key recheck=: in bf16/fp16, answer again on the float32 model the answers whose top two "
                "logits are closer than this: auto (exams: twice the largest bf16 error measured in the run; "
                "ShopBench's greedy answers: 0.05 at their closest decision), a number, or 0 (off)")


def _opt(help_: str, panel: str | None = None, *decls: str) -> typer.models.OptionInfo:
    return typer.Option(*decls, help=help_, rich_help_panel=panel)


@dataclass(frozen=True)
class Common:
    model: Annotated[str, typer.Argument(help="Model spec: smollm2, hf:PATH[,k=v...], openai:NAME@URL")] = "smollm2"
    task: Annotated[str, _opt("mmlu, cmmlu, ceval, classify, shopbench (or a plugin task)")] = "mmlu"
    data: Annotated[Path | None, _opt("Data folder (a file for classify, shopbench); default: built-in sample")] = None
    shots: Annotated[int | None, _opt("Few-shot examples per question (default: 5 for exams, 0 for classify)")] = None
    dtype: Annotated[str | None, _opt("auto, float32, bfloat16, float16 (overrides the spec)")] = None
    out_dir: Annotated[Path | None, _opt("Result folder (default results/<model>/)", None, "--out")] = None
    db: Annotated[Path | None, _opt("SQLite store (default $LMBOARD_DB or ~/.lmboard/lmboard.db)", None, "--db")] = None
    quiet: Annotated[bool, _opt("No progress bar or table", None, "--quiet", "-q")] = False
    threads: Annotated[int | None, _opt("CPU threads for the model (default: the cores this process may use)",
                                        None, "--threads")] = None
    plugins: Annotated[list[Path] | None, _opt("Python files/folders registering backends or tasks", None,
                                               "--plugins")] = None


@dataclass(frozen=True)
class Running:
    """Flags that stand for the hf backend's runtime options (the spec keys)."""

    batch_tokens: Annotated[str | None, _opt("Token budget per batch (all prompts' tokens), or auto: spec key "
                                             "batch_tokens=", RUN)] = None
    recheck_margin: Annotated[str | None, _opt(RECHECK_HELP, RUN)] = None


@dataclass(frozen=True)
class ExamFlags:
    subjects: Annotated[str | None, _opt("Comma-separated subjects (default: all)", EXAM)] = None
    limit: Annotated[int | None, _opt("Questions per subject", EXAM)] = None
    letter_token: Annotated[str, _opt('spaced: " A" after the cue; bare: tokenizer("A")[-1]', EXAM)] = "spaced"
    chat: Annotated[bool, _opt("Render through the model's chat template", EXAM, "--chat")] = False
    max_length: Annotated[int | None, _opt("Context limit for prompts (default: the model's)", EXAM)] = None
    subcategories: Annotated[bool, _opt("Show subcategories", EXAM, "--subcategories")] = False
    per_subject: Annotated[bool, _opt("Show subjects", EXAM, "--per-subject")] = False


@dataclass(frozen=True)
class ClassifyFlags:
    text_column: Annotated[str, _opt("The text column", CLS)] = "text"
    label_column: Annotated[str, _opt("The label column", CLS)] = "label"
    labels: Annotated[str | None, _opt('Label values and names: "0=负面,1=正面"', CLS)] = None
    template: Annotated[str | None, _opt("Prompt template with {labels} and {text}", CLS)] = None
    train: Annotated[Path | None, _opt("Training file for the shots", CLS)] = None
    split: Annotated[float | None, _opt("Train share when splitting --data (e.g. 0.8)", CLS)] = None
    test_size: Annotated[int | None, _opt("Cap the test split at N rows", CLS)] = None
    seed: Annotated[int, _opt("Split and shot seed", CLS)] = 123
    by: Annotated[str, _opt("loglik or generate (also for exams: --by generate reads the letter from an answer in words)",
                            CLS)] = "loglik"
    normalize: Annotated[str, _opt("none, tokens or chars (loglik)", CLS)] = "none"


@dataclass(frozen=True)
class RoutedFlags:
    tasks: Annotated[str | None, _opt("Comma-separated task names (default: all)", ROUTED)] = None
    routes: Annotated[Path | None, _opt("Route file (JSON or YAML), tried before the built-in routes", ROUTED)] = None
    parse: Annotated[str, _opt("official (the kit's parsers.py 0.1.1) or lenient (the seed's)", ROUTED)] = "official"
    mc_by: Annotated[str, _opt("Multiple choice by generate, or loglik (option numbers' log-likelihood)",
                               ROUTED)] = "generate"
    responses: Annotated[Path | None, _opt("Score these answers (JSONL: index or input_field, response); no model "
                                           "runs", ROUTED)] = None
    embedder: Annotated[list[str] | None, _opt("METRIC=PATH: a local sentence-transformers model for a metric "
                                               "(repeatable)", ROUTED)] = None
    concurrency: Annotated[int, _opt("Requests in flight for an endpoint", ROUTED)] = 8


@options.command(Common, Running, ExamFlags, ClassifyFlags, RoutedFlags, TaskFileFlags)
def eval_cmd(c: Common, r: Running, exam: ExamFlags, cls: ClassifyFlags, routed: RoutedFlags,
             files: TaskFileFlags) -> None:
    """Score a model on an exam (MMLU, CMMLU, C-Eval), a classification task, a routed benchmark (ShopBench)
    or lm-evaluation-harness task YAMLs."""
    if c.plugins:
        from lmboard.models.registry import load_plugin_paths

        load_plugin_paths(c.plugins)
    check_positive(c.threads, "--threads")
    spec = model_spec(c.model, c.dtype, batch_tokens=parse_budget(r.batch_tokens),
                      recheck=parse_margin(r.recheck_margin))
    where = f"--task {c.task}"
    if is_task_file(c.task, files):
        options.unused(cls, where), options.unused(routed, where)
        options.unused(dataclasses.replace(exam, limit=None, chat=False), where)  # --limit, --chat apply
        if c.data is not None:
            raise UsageError(f"--data does not apply to {where} (the YAML names its data files)")
        harness(spec, c.task, c.shots, exam.limit, exam.chat, c.out_dir, c.db, c.quiet, c.threads, files)
        return
    kind = getattr(TASKS.get(c.task), "kind", "exam")
    by_generate = kind == "exam" and cls.by == "generate"
    options.unused(dataclasses.replace(files, max_new_tokens=None, strip_thinking=None) if by_generate else files, where)
    if kind == "routed":
        options.unused(exam, where), options.unused(cls, where)
        if c.shots is not None:
            raise UsageError(f"--shots does not apply to {where}")
        _routed(spec, c, routed)
    elif kind == "classification":
        options.unused(exam, where), options.unused(routed, where)
        _classify(spec, c, cls)
    else:
        options.unused(dataclasses.replace(cls, by="loglik"), where), options.unused(routed, where)
        if cls.by not in ("loglik", "generate"):
            raise UsageError(f"--by must be loglik or generate (got {cls.by!r})")
        _exam(spec, c, exam, files if by_generate else None)


def _exam(spec: ModelSpec, c: Common, f: ExamFlags, gen: TaskFileFlags | None = None) -> None:
    from lmboard.report.exam import write_exam_files
    from lmboard.report.tables import exam_table
    from lmboard.tasks.exam import ExamSettings
    from lmboard.tasks.exam_run import load_questions, run_exam

    if f.letter_token not in ("spaced", "bare"):
        raise UsageError(f"--letter-token must be spaced or bare (got {f.letter_token!r})")
    check_positive(f.limit, "--limit")
    check_positive(f.max_length, "--max-length")
    settings = ExamSettings(c.task, c.data or builtin_data(c.task), split_list(f.subjects), f.limit,
                            5 if c.shots is None else c.shots, f.letter_token, f.chat, f.max_length)
    if settings.shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {settings.shots})")
    exam = TASKS.get(settings.task)()
    if gen is not None:
        if f.letter_token != "spaced":
            raise UsageError("--letter-token does not apply to --by generate (the letter is read from the answer)")
        check_positive(gen.max_new_tokens, "--max-new-tokens")
    for cap in (Capability.GENERATE if gen else Capability.SCORE, Capability.TOKENIZE):
        require_backend(spec, cap, f"--task {settings.task} --by generate (answers through the chat template)" if gen
                        else f"--task {settings.task} (the answer letters' logits, on prompts in its tokens)")
    loaded = load_questions(exam, settings)  # bad data fails here, before the model loads
    out_path = c.out_dir or Path("results") / spec.display_name
    main = world().main  # under torchrun, rank 0 alone opens the store and writes files
    if main:
        check_out_dir(out_path)
    store = open_store(c.db, c.quiet) if main else None
    lm = load_lm(spec, c.quiet, c.threads, needs=() if gen else (Capability.SCORE,))
    with progress_bar(f"{settings.task} {spec.display_name}", c.quiet or not main) as update:
        if gen is not None:
            from lmboard.tasks.exam_gen import GenExamSettings, run_exam_generate

            if not lm.has_chat_template():
                raise UsageError(f"--by generate: model {spec.display_name} has no chat template")
            result = run_exam_generate(exam, lm, settings, GenExamSettings(gen.max_new_tokens, gen.strip_thinking),
                                       store, update, loaded)
        else:
            result = run_exam(exam, lm, settings, store, progress=update, loaded=loaded)
    if result is None:  # another rank: its results went to rank 0
        return
    acc = write_exam_files(result, exam, settings.data, out_path)
    store.finish_run(result.run_id, {k: v for k, v in acc.items() if k != "subjects"}, peak_memory())
    fewer = {s: used for s, used in result.shots_used.items() if min(used) < settings.shots}
    if fewer and not c.quiet:  # a subject's pool smaller than --shots, or prompts cut to fit the context
        err.print(f"note: fewer than --shots {settings.shots} examples where the pool or the context held fewer: "
                  + ", ".join(f"{s} ({sum(n < settings.shots for n in used)} of {len(used)} questions, "
                              f"{min(used)} to {max(used)} shots)" for s, used in fewer.items()),
                  markup=False, highlight=False, soft_wrap=True)
    if not c.quiet:
        out.print(exam_table(result.model, acc, f.subcategories, f.per_subject))
        if gen is not None:
            _extraction_lines(result)
        out.print(f"results: {out_path}  (run {result.run_id}{', resumed' if result.resumed else ''})")


def _extraction_lines(result) -> None:
    """How the letters were read, and the answers that gave none."""
    from lmboard.tasks.exam_gen import extraction_summary
    from lmboard.tasks.extract import RULE

    x = extraction_summary(result)
    out.print(f"letters read by: {', '.join(f'{k} {v}' for k, v in sorted(x['rules'].items()))} "
              f"(rule: {RULE}); no extractable letter: {x['no_letter']:.1%} of {x['n']}", markup=False)
    for r in x["examples"].get("none", []):
        out.print(f"  no letter in: {r[:160]!r}", markup=False)


def _classify(spec: ModelSpec, c: Common, f: ClassifyFlags) -> None:
    from lmboard.finetune.provenance import check_not_trained_on
    from lmboard.report.classify import classify_summary, write_classify_files
    from lmboard.tasks.classify import ClassifyJob, ClassifySettings
    from lmboard.tasks.classify_run import load_job, run_classify, scoring_spec

    if c.data is None:
        raise UsageError("--data FILE is required for --task classify")
    s = ClassifySettings(parse_labels(f.labels), f.template, c.shots or 0, f.by, f.normalize, f.seed)
    job = ClassifyJob(c.data, s, f.text_column, f.label_column, f.train, f.split, f.test_size)
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
    job_name = f"--task classify --by {s.by} (label {'log-likelihoods' if s.by == 'loglik' else 'answers'}, "
    need = (Capability.SCORE if s.by == "loglik" else Capability.GENERATE, Capability.TOKENIZE)
    for cap in need:
        require_backend(spec, cap, job_name + "on prompts in its tokens)")
    test = load_job(job)[1]  # bad data fails here, before the model loads
    check_not_trained_on(spec, job.data, [e.line for e in test])
    out_path = c.out_dir or Path("results") / spec.display_name / "classify"
    main = world().main
    if main:
        check_out_dir(out_path)
    store = open_store(c.db, c.quiet) if main else None
    lm = load_lm(scoring_spec(spec, job), c.quiet, c.threads, needs=need)
    with progress_bar(f"classify {spec.display_name}", c.quiet or not main) as update:
        result = run_classify(lm, job, store, update)
    if not main:
        return
    write_classify_files(result, out_path)
    if not c.quiet:
        for line in classify_summary(spec.display_name, result):
            out.print(line, markup=False)


def _routed(spec: ModelSpec, c: Common, f: RoutedFlags) -> None:
    from lmboard.report.shopbench import shopbench_table, write_shopbench_files
    from lmboard.tasks.shopbench_run import prepare, run_shopbench

    check_positive(f.concurrency, "--concurrency")
    settings = _shopbench_settings(c.data, f)
    if settings.mc_by == "loglik":
        for cap in (Capability.SCORE, Capability.TOKENIZE):
            require_backend(spec, cap, "--task shopbench --mc-by loglik (option log-likelihoods)")
    elif settings.responses is None and Capability.GENERATE not in backend_capabilities(spec):
        require_backend(spec, Capability.GENERATE, "--task shopbench (generated answers)")
    prepared = prepare(settings)  # bad data, routes, responses or a missing metric package fail here
    out_path = c.out_dir or Path("results") / spec.display_name / "shopbench"
    main = world().main  # under torchrun, rank 0 alone opens the store and writes files
    if main:
        check_out_dir(out_path)
    store = open_store(c.db, c.quiet) if main else None
    needs = (Capability.SCORE,) if settings.mc_by == "loglik" else ()
    lm = None if settings.responses is not None else load_lm(spec, c.quiet, c.threads, needs)
    with progress_bar(f"shopbench {spec.display_name}", c.quiet or not main) as update:
        result = run_shopbench(lm, spec, settings, store, update, prepared, f.concurrency)
    if not main:
        return
    write_shopbench_files(result, out_path)
    if not c.quiet:
        out.print(shopbench_table(result))
        out.print(f"results: {out_path}  (run {result['run_id']}{', resumed' if result['resumed'] else ''})")


def _shopbench_settings(data: Path | None, f: RoutedFlags):
    from lmboard.metrics.shopbench import EMBEDDING_METRICS
    from lmboard.tasks.routes import load_routes
    from lmboard.tasks.shopbench import ShopBenchSettings
    from lmboard.tasks.shopbench_parse import PARSE_MODES

    if f.parse not in PARSE_MODES:
        raise UsageError(f"--parse must be official or lenient (got {f.parse!r})")
    if f.mc_by not in ("generate", "loglik"):
        raise UsageError(f"--mc-by must be generate or loglik (got {f.mc_by!r})")
    if f.responses is not None and f.mc_by == "loglik":
        raise UsageError("--responses scores given answers: --mc-by loglik would need the model")
    if f.responses is not None:
        need_file(f.responses, "--responses")
    embedders = {}
    for item in f.embedder or []:
        metric, sep, path = item.partition("=")
        if not sep or not path.strip():
            raise UsageError(f"--embedder: expected METRIC=PATH, got {item!r}")
        if metric.strip() not in EMBEDDING_METRICS:
            raise UsageError(f"--embedder: {metric.strip()!r} is not an embedding metric ({', '.join(EMBEDDING_METRICS)})")
        embedders[metric.strip()] = Path(path.strip())
    user_routes = tuple(load_routes(f.routes)) if f.routes else ()
    data = data or builtin_data("shopbench") / "sample.json"
    return ShopBenchSettings(Path(data), split_list(f.tasks), user_routes, str(f.routes) if f.routes else None,
                             f.parse, f.mc_by, f.responses, embedders)

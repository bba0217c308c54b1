"""Benchmarks and the jobs that run them.

One file per benchmark: data, prompt and scorer (mmlu.py, cmmlu.py, ceval.py on the
exam layer exam.py; classify.py; open_ended.py for generation prompt sets). The jobs:
exam_run.py (prompts -> scoring engine -> store), classify_run.py, and
open_ended.run_generation. Benchmarks register by name with ``@register_task``.
"""

"""Benchmarks and the jobs that run them.

One file per benchmark: data, prompt and scorer (mmlu.py, cmmlu.py, ceval.py on the
exam layer exam.py; classify.py; shopbench.py; open_ended.py for generation prompt
sets). The jobs: exam_run.py (prompts -> the model's ``score`` -> store),
classify_run.py, shopbench_run.py and open_ended.run_generation, each on the job runner
(lmboard/job.py) and the LM protocol alone. Benchmarks register by name with
``@register_task``.
"""

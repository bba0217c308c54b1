"""Every metric lmboard reports, in one place, with one bootstrap.

    accuracy.py        exam accuracy by subject, subcategory and category; softmax
    classification.py  accuracy, macro-F1, per-label precision/recall, confusion
    bootstrap.py       the percentile bootstrap interval of a mean (win rates, grades)
    latency.py         percentiles and the median/p90/p99 summaries of timings

Win rates and length control, which only judging uses, live in lmboard/judge/stats.py
and draw their intervals from bootstrap.py. The jobs call them by name (no registry:
nothing chooses a metric by a name given at run time).
"""

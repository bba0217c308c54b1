"""lm-evaluation-harness task YAMLs run as they are: reading the files and their data
(config.py), rendering prompts as lm-eval renders them (render.py), filters and metrics
(metrics.py), the job on the LM protocol and lm-eval-shaped results (run.py)."""

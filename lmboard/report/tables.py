"""Terminal tables."""

from __future__ import annotations

from rich.table import Table


def exam_table(model: str, acc: dict, show_subcategories: bool = False, show_subjects: bool = False) -> Table:
    t = Table(title=f"{model}: accuracy", title_justify="left")
    t.add_column("group")
    t.add_column("name")
    t.add_column("accuracy", justify="right")
    if show_subjects:
        for name, v in acc["subjects"].items():
            t.add_row("subject", name, f"{v:.3f}")
    if show_subcategories:
        for name, v in acc["subcategories"].items():
            t.add_row("subcategory", name, f"{v:.3f}")
    for name, v in acc["categories"].items():
        t.add_row("category", name, f"{v:.3f}")
    t.add_row("all", f"weighted ({acc['n_questions']} questions)", f"{acc['weighted_accuracy']:.3f}", style="bold")
    return t

"""The seed's MMLU code (seed 000), verbatim apart from formatting, and a dev-split layout
built from the real test file: the reference lmboard's MMLU is tested against."""

import csv
import shutil

import numpy as np
import torch

from helpers import MMLU

choices = ["A", "B", "C", "D"]


def seed_format_subject(subject):
    l = subject.split("_")  # noqa: E741
    s = ""
    for entry in l:
        s += " " + entry
    return s


def seed_format_example(df, idx, include_answer=True):
    prompt = df.iloc[idx, 0]
    k = df.shape[1] - 2
    for j in range(k):
        prompt += "\n{}. {}".format(choices[j], df.iloc[idx, j + 1])
    prompt += "\nAnswer:"
    if include_answer:
        prompt += " {}\n\n".format(df.iloc[idx, k + 1])
    return prompt


def seed_gen_prompt(train_df, subject, k=-1):
    prompt = "The following are multiple choice questions (with answers) about {}.\n\n".format(
        seed_format_subject(subject)
    )
    if k == -1:
        k = train_df.shape[0]
    for i in range(k):
        prompt += seed_format_example(train_df, i)
    return prompt


def seed_loop(model, tokenizer, dev_df, test_df, subject, k, letter_ids):
    """The seed's eval(): one forward per question, softmax over the 4 letter logits."""
    out = []
    for i in range(test_df.shape[0]):
        prompt = seed_gen_prompt(dev_df, subject, k) + seed_format_example(test_df, i, include_answer=False)
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, -1]
        probs = torch.nn.functional.softmax(torch.tensor([logits[j] for j in letter_ids]).float(), dim=0).numpy()
        out.append(probs)
    return np.array(out)




def make_dev_layout(d):
    """anatomy with a dev split: rows 0-4 of the real test file as dev, rows 5-16 as test."""
    rows = list(csv.reader(open(MMLU / "test" / "anatomy_test.csv", newline="", encoding="utf-8")))
    for split, part in (("dev", rows[:5]), ("test", rows[5:17])):
        (d / split).mkdir()
        with open(d / split / f"anatomy_{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(part)
    shutil.copy(MMLU / "categories.json", d / "categories.json")
    return d

"""A backend that a third-party package registers only through the ``lmboard.models``
entry point is named on the command line like a built-in one."""

import json
import textwrap

import pytest

from helpers import check_one_line_error, lmboard

BACKEND = textwrap.dedent('''
    from dataclasses import dataclass

    from lmboard import register_model
    from lmboard.lm import Capability, GenResult


    @dataclass(frozen=True)
    class EchoOptions:
        prefix: str = ""


    @register_model("echo", options=EchoOptions)
    class EchoModel:
        """Answers each prompt with its words reversed."""

        capabilities = frozenset({Capability.GENERATE})

        def __init__(self, spec):
            self.spec = spec

        def info(self):
            return {"model_spec": self.spec.to_dict()}

        def check(self):
            pass

        def run_identity(self, work):
            return {}

        def generate(self, requests, settings, concurrency=8, skip=None, exact=False):
            for r in requests:
                if skip is not None and skip(r.key):
                    continue
                text = r.text if r.text is not None else r.messages[-1]["content"]
                out = self.spec.options.prefix + " ".join(reversed(text.split()))
                yield GenResult(r.key, out, text, None, None, 0.0, "stop", {})
''')


@pytest.fixture
def installed_plugin(tmp_path):
    """A package installed the way pip installs one: a module and a dist-info folder whose
    entry_points.txt names it in the lmboard.models group."""
    site = tmp_path / "site"
    (site / "lmboard_echo-0.1.dist-info").mkdir(parents=True)
    (site / "lmboard_echo.py").write_text(BACKEND)
    (site / "lmboard_echo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lmboard-echo\nVersion: 0.1\n")
    (site / "lmboard_echo-0.1.dist-info" / "entry_points.txt").write_text("[lmboard.models]\necho = lmboard_echo\n")
    return {"PYTHONPATH": str(site)}


def test_entry_point_backend_is_usable_by_name(installed_plugin, tmp_path):
    (tmp_path / "p.txt").write_text("one two three\nhello world\n")
    r = lmboard("generate", "--models", "echo:any-name,prefix=>>", "--prompts", str(tmp_path / "p.txt"),
                "--out", str(tmp_path / "o"), "--db", str(tmp_path / "db"), "--quiet", env=installed_plugin)
    assert r.returncode == 0, r.stderr
    entries = json.loads((tmp_path / "o" / "output.json").read_text())
    assert [e["output"] for e in entries] == [">>three two one", ">>world hello"]
    assert {e["generator"] for e in entries} == {"any-name"}
    # its options are its own, and an exam it cannot serve is the one-line capability error
    check_one_line_error(lmboard("generate", "--models", "echo:x,dtype=float32", "--prompts", str(tmp_path / "p.txt"),
                                 env=installed_plugin), "unknown option 'dtype'", "prefix")
    check_one_line_error(lmboard("eval", "echo:x", "--task", "mmlu", "--db", str(tmp_path / "db"), env=installed_plugin),
                         "'score' capability", "echo backend")
    # without the package the backend is unknown
    check_one_line_error(lmboard("generate", "--models", "echo:x", "--prompts", str(tmp_path / "p.txt")),
                         "unknown model alias")

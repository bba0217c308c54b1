"""One registry mechanism: decorators, lazy entry-point groups, plugin files."""

import sys
from importlib.metadata import EntryPoint

import pytest

from lmboard.errors import UsageError
from lmboard.lm import Capability
from lmboard.models.registry import backend_capabilities, load_model, load_plugin_paths, require_backend
from lmboard.models.spec import parse_model_spec
from lmboard.registry import BACKENDS, INFER, TASKS, Registry, register_model


def test_register_model_decorator_options_and_load():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class DummyOptions:
        size: int = 1

    @register_model("dummy-backend", options=DummyOptions)
    class Dummy:
        capabilities = frozenset({Capability.GENERATE})

        def __init__(self, spec):
            self.spec = spec

    spec = parse_model_spec("dummy-backend:thing,size=3")  # a registered backend is named like a built-in
    assert spec.options == DummyOptions(3)
    # a backend without the methods its capabilities promise is a one-line error at load
    with pytest.raises(UsageError, match="does not implement info, check, run_identity, generate"):
        load_model(spec)
    for name in ("info", "check", "run_identity", "generate"):
        setattr(Dummy, name, lambda self, *a, **k: None)
    assert isinstance(load_model(spec), Dummy)
    assert backend_capabilities(spec) == {Capability.GENERATE}
    with pytest.raises(UsageError, match="'score' capability"):
        require_backend(spec, Capability.SCORE, "scoring")


def test_entry_points_are_loaded_lazily_by_name_first(monkeypatch, tmp_path):
    for name, body in {"plug_a": "@register_llm_infer('shout')\ndef f(texts, **kw):\n    return [t.upper() for t in texts]",
                       "plug_b": "@register_llm_infer('other')\ndef g(texts, **kw):\n    return texts"}.items():
        (tmp_path / f"{name}.py").write_text("from lmboard import register_llm_infer\n" + body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("inference function", "test.group")
    monkeypatch.setattr("lmboard.registry.INFER", reg)
    eps = [EntryPoint("shout", "plug_a", "test.group"), EntryPoint("other", "plug_b", "test.group")]
    monkeypatch.setattr(reg, "_entry_points", lambda: eps)
    import lmboard

    monkeypatch.setattr(lmboard, "register_llm_infer", reg.register)
    assert "plug_a" not in sys.modules  # nothing loaded until a lookup misses
    assert reg.get("shout")(["hi"]) == ["HI"]
    assert "plug_a" in sys.modules and "plug_b" not in sys.modules  # only the entry point of that name
    assert reg.names() == ["other", "shout"] and "plug_b" in sys.modules
    with pytest.raises(UsageError, match="unknown inference function 'nope' \\(known: other, shout\\)"):
        reg.get("nope")
    for m in ("plug_a", "plug_b"):
        sys.modules.pop(m, None)


def test_builtins_register_through_the_entry_points():
    assert {"hf", "openai", "plugin"} <= set(BACKENDS.names())
    assert {"mmlu", "cmmlu", "ceval", "classify"} <= set(TASKS.names())
    with pytest.raises(UsageError, match="unknown task 'nosuch'"):
        TASKS.get("nosuch")


def test_plugin_paths_and_unknown_plugin(tmp_path):
    (tmp_path / "p.py").write_text(
        "from lmboard import register_llm_infer\n"
        "@register_llm_infer('echo-test')\n"
        "def f(texts, **kw):\n    return list(texts)\n"
    )
    load_plugin_paths([tmp_path])
    assert INFER.get("echo-test")(["a"]) == ["a"]
    with pytest.raises(UsageError, match="no inference function"):
        load_model(parse_model_spec("plugin:never-registered"))
    with pytest.raises(UsageError, match="no such file"):
        load_plugin_paths([tmp_path / "missing.py"])


def test_broken_plugin_warns_and_lmboard_goes_on(monkeypatch, capsys):
    reg = Registry("thing", "test.broken")
    monkeypatch.setattr(reg, "_entry_points", lambda: [EntryPoint("bad", "no_such_module_xyz", "test.broken")])
    assert reg.find("bad") is None
    assert "plugin 'bad'" in capsys.readouterr().err

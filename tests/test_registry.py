import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from lmboard.config import parse_model_spec
from lmboard.errors import UsageError
from lmboard.models import registry


def test_register_model_decorator_and_load():
    class Dummy:
        def __init__(self, spec):
            self.spec = spec

    registry.register_model("dummy-backend")(Dummy)
    spec = parse_model_spec("smollm2")
    import dataclasses

    lm = registry.load_model(dataclasses.replace(spec, backend="dummy-backend"))
    assert isinstance(lm, Dummy)


def test_entry_points_are_loaded_lazily(monkeypatch, tmp_path):
    mod = tmp_path / "my_lmboard_plugin.py"
    mod.write_text(textwrap.dedent("""
        from lmboard import register_llm_infer
        @register_llm_infer("shout")
        def shout(texts, **kw):
            return [t.upper() for t in texts]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = []

    def fake_entry_points(group):
        calls.append(group)
        return [EntryPoint("shout", "my_lmboard_plugin", group)]

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert calls == []  # nothing loaded until a lookup misses
    fn = registry.infer_function("shout")
    assert calls == ["lmboard.models"]
    assert fn(["hi"]) == ["HI"]
    sys.modules.pop("my_lmboard_plugin", None)


def test_plugin_paths_and_unknown_plugin(tmp_path):
    (tmp_path / "p.py").write_text(
        "from lmboard import register_llm_infer\n"
        "@register_llm_infer('echo-test')\n"
        "def f(texts, **kw):\n    return list(texts)\n"
    )
    registry.load_plugin_paths([tmp_path])
    assert registry.infer_function("echo-test")(["a"]) == ["a"]
    with pytest.raises(UsageError, match="no inference function"):
        registry.infer_function("never-registered")
    with pytest.raises(UsageError, match="no such file"):
        registry.load_plugin_paths([tmp_path / "missing.py"])

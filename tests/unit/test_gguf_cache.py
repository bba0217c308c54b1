"""The GGUF unpack cache under torch.distributed: transformers writes a model's weights on
rank 0 only, and two ranks may unpack the same file at once."""

from __future__ import annotations

from types import SimpleNamespace

from lmboard.models.gguf_cache import save_gguf_cache


class Saves:
    """A model and tokenizer whose save_pretrained writes the named files."""

    def __init__(self, *files: str):
        self.files = files
        self.config = SimpleNamespace(architectures=["LlamaForCausalLM"])

    def save_pretrained(self, folder):
        for f in self.files:
            (folder / f).write_text("x")


def test_a_copy_without_weights_is_not_marked_complete(tmp_path):
    """Another rank's save (tokenizer files only) never becomes the cache."""
    target = tmp_path / "gguf" / "m-float32-key"
    assert save_gguf_cache(target, Saves(), Saves("tokenizer.json")) is None
    assert not target.exists() and not list(target.parent.glob(".tmp-*"))


def test_a_finished_copy_in_place_is_kept(tmp_path):
    """A second process finishing later drops its copy; the first one's stays, untouched."""
    target = tmp_path / "gguf" / "m-float32-key"
    first = save_gguf_cache(target, Saves("config.json", "model.safetensors"), Saves("tokenizer.json"))
    assert first == str(target) and (target / "complete").is_file()
    (target / "model.safetensors").write_text("first")
    again = save_gguf_cache(target, Saves("config.json", "model.safetensors"), Saves("tokenizer.json"))
    assert again == str(target) and (target / "model.safetensors").read_text() == "first"
    assert not list(target.parent.glob(".tmp-*"))

"""Model specs: backends from the registry, each with its own typed options."""

import dataclasses

import pytest

from lmboard.errors import UsageError
from lmboard.models.hf import HFOptions
from lmboard.models.openai_api import OpenAIOptions
from lmboard.models.spec import parse_kv, parse_model_spec


def test_alias_smollm2_points_at_the_shipped_gguf():
    spec = parse_model_spec("smollm2")
    assert spec.backend == "hf" and spec.options.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.display_name == "smollm2"
    assert parse_model_spec("smollm2,dtype=float32").options.dtype == "float32"
    assert parse_model_spec("smollm2,label=mine").display_name == "mine"


def test_hf_spec_with_options():
    spec = parse_model_spec("hf:/models/x,gguf_file=m.gguf,dtype=bfloat16,adapter=/a,device=cpu,trust_remote_code=true")
    assert spec.backend == "hf" and spec.name == "/models/x"
    assert spec.options == HFOptions(gguf_file="m.gguf", dtype="bfloat16", adapter="/a", device="cpu",
                                     trust_remote_code=True)
    assert spec.display_name == "m"  # a GGUF is named after its file
    assert parse_model_spec("hf:org/name").options.trust_remote_code is False
    assert spec.to_dict()["dtype"] == "bfloat16" and "base_url" not in spec.to_dict()  # options per backend


def test_openai_spec_splits_model_and_url():
    spec = parse_model_spec("openai:gpt-4o@https://api.example/v1,api_key_env=MY_KEY,timeout=30")
    assert (spec.backend, spec.name) == ("openai", "gpt-4o")
    assert spec.options == OpenAIOptions(base_url="https://api.example/v1", api_key_env="MY_KEY", timeout=30.0)


def test_with_options_validates_and_names_the_flag():
    spec = parse_model_spec("smollm2")
    assert spec.with_options("--dtype", dtype="bfloat16").options.dtype == "bfloat16"
    with pytest.raises(UsageError, match="--dtype: dtype must be one of"):
        spec.with_options("--dtype", dtype="int3")
    with pytest.raises(UsageError, match="--dtype: the openai backend has no option 'dtype'"):
        parse_model_spec("openai:m@http://x/v1").with_options("--dtype", dtype="float32")


@pytest.mark.parametrize(
    "text, msg",
    [
        ("nosuchmodel", "unknown model alias"),
        ("hf:x,dtype=int3", "dtype must be one of"),
        ("hf:x,colour=red", "unknown option 'colour'"),
        ("hf:x,dtype", "expected key=value"),
        ("openai:gpt-4o", "openai:MODEL@BASE_URL"),
        ("openai:gpt-4o@http://x,dtype=float32", "unknown option 'dtype'"),
        ("openai:gpt-4o@http://x,timeout=soon", "timeout must be a number"),
        ("hf:x,load_in=2bit", "load_in must be"),
        ("hf:x,trust_remote_code=maybe", "trust_remote_code must be true or false"),
        ("hf:", "missing model name"),
        ("plugin:f,batch_size=0", "batch_size must be >= 1"),
    ],
)
def test_bad_specs_are_one_line_errors(text, msg):
    with pytest.raises(UsageError, match=msg) as e:
        parse_model_spec(text)
    assert "\n" not in str(e.value)


def test_parse_kv():
    assert parse_kv("a=1, b=x=y", "t") == {"a": "1", "b": "x=y"}


def test_canonical_leaves_out_the_label_and_defaults_that_are_off():
    a, b = parse_model_spec("smollm2,label=a"), parse_model_spec("smollm2,label=b")
    assert a.canonical() == b.canonical() and "trust_remote_code" not in a.canonical()
    assert dataclasses.replace(a, name="other").canonical() != a.canonical()

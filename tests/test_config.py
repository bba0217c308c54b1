import pytest

from lmboard.config import ModelSpec, parse_kv, parse_model_spec
from lmboard.errors import UsageError


def test_alias_smollm2_points_at_the_shipped_gguf():
    spec = parse_model_spec("smollm2")
    assert spec.backend == "hf" and spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.display_name == "smollm2"
    assert parse_model_spec("smollm2,dtype=float32").dtype == "float32"


def test_hf_spec_with_options():
    spec = parse_model_spec("hf:/models/x,gguf_file=m.gguf,dtype=bfloat16,adapter=/a,device=cpu,trust_remote_code=true")
    assert spec == ModelSpec(backend="hf", name="/models/x", gguf_file="m.gguf", dtype="bfloat16", adapter="/a",
                             device="cpu", trust_remote_code=True)
    assert parse_model_spec("hf:org/name").trust_remote_code is False


def test_openai_spec_splits_model_and_url():
    spec = parse_model_spec("openai:gpt-4o@https://api.example/v1,api_key_env=MY_KEY")
    assert (spec.backend, spec.name, spec.base_url, spec.api_key_env) == ("openai", "gpt-4o", "https://api.example/v1", "MY_KEY")


@pytest.mark.parametrize(
    "text, msg",
    [
        ("nosuchmodel", "unknown model alias"),
        ("hf:x,dtype=int3", "dtype must be one of"),
        ("hf:x,colour=red", "unknown option 'colour'"),
        ("hf:x,dtype", "expected key=value"),
        ("openai:gpt-4o", "openai:MODEL@BASE_URL"),
        ("hf:x,load_in=2bit", "load_in must be"),
        ("hf:", "missing model name"),
    ],
)
def test_bad_specs_are_one_line_errors(text, msg):
    with pytest.raises(UsageError, match=msg) as e:
        parse_model_spec(text)
    assert "\n" not in str(e.value)


def test_parse_kv():
    assert parse_kv("a=1, b=x=y", "t") == {"a": "1", "b": "x=y"}

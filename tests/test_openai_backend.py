"""OpenAIGenerator against a real HTTP server on 127.0.0.1 (tests/openai_stub.py)."""

from __future__ import annotations

import threading
import time

import pytest
from openai_stub import StubServer

from crosspath.backends import BackendError, Generator, SamplingParams
from crosspath.backends.openai import OpenAIGenerator, list_models

FAST = dict(backoff_base=0.0, timeout=5.0)


@pytest.fixture
def srv():
    with StubServer() as s:
        yield s


def make(srv_or_urls, **kw) -> OpenAIGenerator:
    urls = srv_or_urls.url if isinstance(srv_or_urls, StubServer) else srv_or_urls
    return OpenAIGenerator(urls, model="stub-model", **{**FAST, **kw})


def test_basic_generation_sends_raw_prompt(srv):
    gen = make(srv)
    assert isinstance(gen, Generator)
    out = gen.generate(["<|im_start|>user\nhi<|im_end|>\nA", "B"], SamplingParams(max_tokens=5, seed=3))
    assert [c.text for c in out] == [" A.3.0 x x x x", " B.4.0 x x x x"]
    assert all(c.finish_reason == "length" and c.stop is None for c in out)
    assert [c.num_tokens for c in out] == [5, 5]  # from usage.completion_tokens
    assert out[0].token_ids == [-1] * 5  # no ids from the server, no tokenizer: placeholders
    body = next(b for b in srv.requests if b["prompt"].endswith("A"))
    assert body["prompt"] == "<|im_start|>user\nhi<|im_end|>\nA"  # exactly as given
    assert body["model"] == "stub-model" and body["max_tokens"] == 5 and body["n"] == 1
    assert "top_k" not in body and "min_p" not in body and "logprobs" not in body and "stop" not in body


def test_optional_params_only_when_set(srv):
    make(srv).generate(["q"], SamplingParams(top_k=20, min_p=0.05, top_p=0.9, temperature=0.7, stop=("\n",)))
    body = srv.requests[0]
    assert (body["top_k"], body["min_p"], body["top_p"], body["temperature"]) == (20, 0.05, 0.9, 0.7)
    assert body["stop"] == ["\n"] and "seed" not in body


def test_n_greater_than_one_is_prompt_major(srv):
    out = make(srv).generate(["P0", "P1"], SamplingParams(max_tokens=1, n=3, seed=10))
    assert [c.text for c in out] == [" P0.10.0", " P0.10.1", " P0.10.2", " P1.11.0", " P1.11.1", " P1.11.2"]
    assert srv.count == 2 and all(b["n"] == 3 for b in srv.requests)
    assert sum(c.num_tokens for c in out) == 6  # usage shared among a request's choices


def test_seed_is_offset_per_prompt(srv):
    make(srv).generate([f"p{i}" for i in range(5)], SamplingParams(max_tokens=1, seed=7))
    assert sorted((b["prompt"], b["seed"]) for b in srv.requests) == [(f"p{i}", 7 + i) for i in range(5)]


def test_stop_string_is_reappended(srv):
    params = SamplingParams(max_tokens=50, stop=("</think>", "\n\n"))
    out = make(srv).generate(["ECHO: think hard </think> answer 4"], params)
    assert srv.responses[0]["choices"][0]["text"] == " think hard "  # the server stripped it (vLLM)
    c = out[0]
    assert (c.text, c.stop, c.finish_reason) == (" think hard </think>", "</think>", "stop")
    assert c.num_tokens == 3  # billed tokens include the stop string's


def test_eos_and_length_finish(srv):
    gen = make(srv)
    eos, length = gen.generate(["ECHO: short", "ECHO: a b c d e f"], SamplingParams(max_tokens=3, stop=("z",)))
    assert (eos.text, eos.finish_reason, eos.stop) == (" short", "stop", None)
    assert (length.text, length.finish_reason, length.stop) == (" a b c", "length", None)


def test_stop_found_in_text_when_server_names_none():
    with StubServer(name_stop=False, strip_stop=False) as s:  # server keeps the stop, says nothing
        c = make(s).generate(["ECHO: x END y"], SamplingParams(stop=("END",)))[0]
    assert (c.text, c.stop, c.finish_reason) == (" x END", "END", "stop")


def test_token_ids_sources(srv):
    class CharTokenizer:
        def encode(self, text, add_special_tokens=True):
            return [ord(ch) for ch in text]

    params = SamplingParams(max_tokens=2)
    assert make(srv, tokenizer=CharTokenizer()).generate(["ECHO: ab"], params)[0].token_ids == [32, 97, 98]
    assert make(srv, request_token_ids=True).generate(["ECHO: a b"], params)[0].token_ids == [100, 101]
    assert srv.requests[-1]["return_token_ids"] is True


def test_logprobs(srv):
    c = make(srv).generate(["ECHO: a b c"], SamplingParams(max_tokens=8, logprobs=True))[0]
    assert srv.requests[0]["logprobs"] == 1
    assert c.logprobs == [-0.5] * 3 and c.num_tokens == 3


def test_retries_after_two_429s(srv):
    srv.fail("429", times=2)
    out = make(srv, max_retries=5).generate(["P"], SamplingParams(max_tokens=1, seed=0))
    assert out[0].text == " P.0.0" and srv.count == 3


def test_retry_after_header_is_honoured():
    with StubServer(retry_after="0.3") as s:
        s.fail("429")
        t = time.monotonic()
        make(s).generate(["P"], SamplingParams(max_tokens=1))
        assert time.monotonic() - t >= 0.3 and s.count == 2


def test_retries_after_500(srv):
    srv.fail("500")
    assert make(srv).generate(["P"], SamplingParams(max_tokens=1, seed=1))[0].text == " P.1.0"
    assert srv.count == 2


def test_exhausted_retries_name_last_status(srv):
    srv.fail("500", times=10)
    with pytest.raises(BackendError, match=r"after 3 tries.*HTTP 500.*scripted 500"):
        make(srv, max_retries=2).generate(["P"], SamplingParams(max_tokens=1))
    assert srv.count == 3


def test_client_error_is_not_retried(srv):
    srv.fail("400")
    with pytest.raises(BackendError, match="not retried.*HTTP 400"):
        make(srv).generate(["P"], SamplingParams(max_tokens=1))
    assert srv.count == 1


def test_garbage_body_names_url_and_quotes_body(srv):
    srv.fail("garbage")
    with pytest.raises(BackendError) as e:
        make(srv).generate(["P"], SamplingParams(max_tokens=1))
    assert srv.url + "/completions" in str(e.value) and "definitely not json" in str(e.value)


def test_missing_choices_is_malformed(srv):
    srv.fail("no_choices")
    with pytest.raises(BackendError, match="no 'choices'.*text_completion"):
        make(srv).generate(["P"], SamplingParams(max_tokens=1))


def test_wrong_choice_count_and_split_n():
    with StubServer(max_choices=1) as s:  # like llama.cpp: one choice per request
        with pytest.raises(BackendError, match="1 choices for n=2; try split_n=True"):
            make(s).generate(["P"], SamplingParams(max_tokens=1, n=2))
        out = make(s, split_n=True).generate(["P", "Q"], SamplingParams(max_tokens=1, n=2, seed=5))
        assert [c.text for c in out] == [" P.5.0", " P.6.0", " Q.7.0", " Q.8.0"]


def test_timeout_retries_then_fails():
    with StubServer(sleep_s=3.0) as s:
        s.fail("sleep", times=10)
        with pytest.raises(BackendError, match=r"after 3 tries.*Timeout"):
            make(s, timeout=0.3, max_retries=2).generate(["P"], SamplingParams(max_tokens=1))
        assert s.count == 3


def test_timeout_then_success():
    with StubServer(sleep_s=3.0) as s:
        s.fail("sleep")
        assert make(s, timeout=0.3).generate(["P"], SamplingParams(max_tokens=1, seed=0))[0].text == " P.0.0"


def test_two_servers_share_load():
    with StubServer() as a, StubServer() as b:
        make([a.url, b.url], concurrency=1).generate([f"p{i}" for i in range(8)], SamplingParams(max_tokens=1))
        assert (a.count, b.count) == (4, 4)  # sequential: strict round-robin
    with StubServer(delay=0.05) as a, StubServer(delay=0.05) as b:
        out = make([a.url, b.url], concurrency=4).generate([f"p{i}" for i in range(12)], SamplingParams(max_tokens=1))
        assert len(out) == 12 and a.count > 0 and b.count > 0 and a.count + b.count == 12


def test_failed_server_is_retried_on_the_other():
    with StubServer() as a, StubServer() as b:
        a.fail("500", times=10)
        out = make([a.url, b.url], concurrency=1, max_retries=1).generate(["p0", "p1"], SamplingParams(max_tokens=1))
        assert len(out) == 2 and b.count == 2


def test_concurrency_limit_respected():
    with StubServer(delay=0.3) as s:  # long enough that 3 requests overlap on a loaded machine
        gen = make(s, concurrency=3)
        gen.generate([f"p{i}" for i in range(12)], SamplingParams(max_tokens=1))
        assert s.max_in_flight == 3
        # two callers sharing one generator still stay under the limit
        threads = [threading.Thread(target=gen.generate, args=([f"t{i}" for i in range(6)], SamplingParams()))
                   for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert s.count == 24 and s.max_in_flight == 3


def test_works_from_inside_a_thread(srv):
    box = {}
    t = threading.Thread(target=lambda: box.update(out=make(srv).generate(["A", "B"], SamplingParams(max_tokens=1, seed=0))))
    t.start()
    t.join(10)
    assert [c.text for c in box["out"]] == [" A.0.0", " B.1.0"]


def test_api_key_sent_as_bearer(monkeypatch):
    with StubServer(api_key="sk-test") as s:
        make(s, api_key="sk-test").generate(["P"], SamplingParams(max_tokens=1))
        assert s.headers[0]["Authorization"] == "Bearer sk-test"
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        make(s).generate(["P"], SamplingParams(max_tokens=1))  # from the environment
        assert list_models(s.url) == ["stub-model"]
        with pytest.raises(BackendError, match="HTTP 401"):
            make(s, api_key="wrong").generate(["P"], SamplingParams(max_tokens=1))


def test_list_models_and_url_forms(srv):
    root = srv.url[: -len("/v1")]
    assert list_models(root) == list_models(srv.url + "/") == ["stub-model"]
    assert make(root).urls == [srv.url + "/completions"]


def test_unreachable_server_fails_with_cause():
    with StubServer() as s:
        url = s.url  # a port that is closed once the server stops
    with pytest.raises(BackendError, match=r"after 2 tries.*ConnectError"):
        make(url, max_retries=1).generate(["P"], SamplingParams(max_tokens=1))


def test_empty_prompts_make_no_request(srv):
    assert make(srv).generate([], SamplingParams()) == [] and srv.count == 0

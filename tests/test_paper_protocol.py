"""``evaluate --protocol paper``: the reference's released GPT-4o evaluation, end to end against a local
OpenAI-compatible server that answers in the released prompts' format (a Python dict string), the parser on
real-looking answers (those the reference's parser got wrong included), the images as the reference sent them
(JPEG, height 512), the refusal to judge real photos with the toy judge, and caches that never mix protocols."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Iterator

import pytest
from PIL import Image

from rewardedit_lib import evaluate as E
from rewardedit_lib import toyworld
from rewardedit_lib.cli import main
from rewardedit_lib.judge import paper_protocol as P
from rewardedit_lib.judge.client import AnswerCache, JudgeRequest
from rewardedit_lib.judge.prompts import AnswerError
from rewardedit_lib.toy.server import ToyJudgeServer
from rewardedit_lib.pipeline import toy_pipeline
from test_evaluate import real_edit_folder
from test_judge_client import BurstHTTPServer
from test_released_weights import save_reference_folder

STEPS = ["--steps", "2"]


def released_answer(perspective: str, instruction: str | None) -> str:
    """What GPT-4o answers to the released prompts, in the shapes seen in practice (an integer score, a fence,
    'Yes'); an instruction with 'unreadable' in it gets prose that no parser can read."""
    key = P.ANSWER_KEYS[perspective]
    if instruction and "unreadable" in instruction and perspective == "following":
        return "I'm sorry, I can't help with evaluating this image."
    return {"following": f"{{'{key}': 'yes', 'score': 5}}",
            "preserving": f"```python\n{{'{key}': 'Yes', 'score': 4.0}}\n```",
            "quality": f"{{'{key}': 'no', 'score': 3.5}}"}[perspective]


class ReleasedFormatServer:
    """A local OpenAI-compatible ``/v1/chat/completions`` that answers paper-protocol requests as GPT-4o does
    and records every request body (to check the model, parameters and images that reached it)."""

    def __init__(self, answer: Callable[[str, str | None], str] = released_answer) -> None:
        self.bodies: list[dict] = []
        self.requests: list[tuple[str, dict]] = []  # (path, headers) of each request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                outer.requests.append((self.path, dict(self.headers)))
                perspective, instruction, _ = P.identify_paper(body["messages"])
                reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": answer(perspective, instruction)}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = BurstHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ReleasedFormatServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[ReleasedFormatServer]:
    with ReleasedFormatServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "toy"
    toy_pipeline(seed=0).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def toy_bench(tmp_path_factory) -> Path:
    return toyworld.write_toy_bench(tmp_path_factory.mktemp("bench") / "b", n_images=1, seed=0)


def images_of(body: dict) -> list[Image.Image]:
    return [Image.open(io.BytesIO(img)) for img in P.identify_paper(body["messages"])[2]]


# --------------------------------------------------------------------------------------------------
# The released prompts and the parser
# --------------------------------------------------------------------------------------------------
def test_the_messages_are_the_released_ones():
    msgs = P.build_paper_messages("following", "make it smile.", b"src", b"edt")
    # adjacent literals in the reference: the sentences run together, as the judge saw them
    assert msgs[0]["content"].startswith("You are an advanced AI designed to assess the accuracy of image edits "
                                         "based on given instructions.Your task is to examine")
    text = msgs[1]["content"][0]["text"]
    assert "Editing Instructions: make it smile.\n" in text
    assert text.endswith("For example, your response should look like this: \"{'following': 'yes', 'score': 4.5}\".")
    assert [part["image_url"] for part in msgs[1]["content"][1:]] == [  # no "detail": the reference sent none
        {"url": "data:image/jpeg;base64,c3Jj"}, {"url": "data:image/jpeg;base64,ZWR0"}]
    quality = P.build_paper_messages("quality", "make it smile.", b"src", b"edt")
    assert "make it smile" not in json.dumps(quality) and len(quality[1]["content"]) == 2  # the edit alone
    assert "'consistent' and 'score'" in P.user_text("preserving", "x")


def reference_parse(text: str) -> tuple[bool, float]:
    """The reference's eval.py, as released: a substring test for yes, a regex that wants a decimal point."""
    match = re.search(r"'score': (\d+\.\d+)", text)
    return ("yes" in text), float(match.group(1))  # type: ignore[union-attr]  # AttributeError: item dropped


@pytest.mark.parametrize("text,perspective,yes,score,reference_failure", [
    ("{'following': 'yes', 'score': 4.5}", "following", True, 4.5, None),
    ("{'following': 'yes', 'score': 5}", "following", True, 5.0, "integer score: the item was dropped"),
    ('{"consistent": "no", "score": 2.5}', "preserving", False, 2.5, "JSON quotes: dropped"),
    ("```python\n{'clear': 'Yes', 'score': 4.0}\n```", "quality", True, 4.0, "'Yes' counted as no"),
    ("\"{'following': 'no', 'score': 1.5}\"", "following", False, 1.5, None),
    ("{'following':'no','score':3}", "following", False, 3.0, "no space, integer: dropped"),
    ("{'clear': 'no', 'score': 3.5", "quality", False, 3.5, None),  # cut off by max_tokens: still readable
    ("{'answer': 'yes', 'score': 0}", "following", True, 0.0, "integer score: dropped"),
])
def test_the_parser_reads_every_answer_the_released_prompt_allows(text, perspective, yes, score, reference_failure):
    v = P.parse_paper_answer(text, perspective)
    assert (v.yes, v.score) == (yes, score) and v.reason == text.strip()
    try:
        ref = reference_parse(text)
    except AttributeError:
        ref = None
    assert (ref == (yes, score)) == (reference_failure is None), reference_failure


@pytest.mark.parametrize("text", [
    "I'm sorry, I can't help with evaluating this image.",
    "{'following': 'maybe', 'score': 3.0}",
    "{'following': 'yes', 'score': 7.5}",
    "{'following': 'yes'}",
    "{'consistent': 'yes', 'clear': 'no', 'score': 4.0}",  # the asked key missing, two candidates
])
def test_an_unreadable_answer_is_an_error_not_a_guess(text):
    with pytest.raises(AnswerError):
        P.parse_paper_answer(text, "following")


def test_images_are_resized_to_height_512_at_the_sources_aspect_and_sent_as_jpeg(tmp_path):
    Image.new("RGB", (50, 38), (200, 10, 10)).save(tmp_path / "src.jpg")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(tmp_path / "edit.png")  # an edit at the model's size
    src, edt = P.prepare_images(tmp_path / "src.jpg", tmp_path / "edit.png")
    for data in (src, edt):
        im = Image.open(io.BytesIO(data))
        assert im.format == "JPEG" and im.size == (int(512 * 50 / 38), 512)


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------
def test_paper_protocol_end_to_end_on_a_toy_model(toy_model, toy_bench, tmp_path, server, capsys):
    toy_bench = Path(shutil.copytree(toy_bench, tmp_path / "bench"))
    instruct = json.loads((toy_bench / "real_edit_instruct.json").read_text())
    name = next(iter(instruct))
    instruct[name][0] = instruct[name][0] + " (unreadable)"  # the judge's answer to this one cannot be read
    (toy_bench / "real_edit_instruct.json").write_text(json.dumps(instruct))
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(toy_model), "--bench", str(toy_bench), "--out", str(out), "--protocol",
               "paper", "--base-url", server.base_url, "--max-retries", "1", "--concurrency", "4", "--no-progress",
               *STEPS])
    assert rc == 0, capsys.readouterr().err
    n = sum(len(v) for v in instruct.values())
    # one request per perspective and item, plus one retry of the unreadable answer
    assert len(server.bodies) == 3 * n + 1
    for body in server.bodies:
        assert body["model"] == P.PAPER_JUDGE_MODEL and body["max_tokens"] == 50
        assert "temperature" not in body and "response_format" not in body
        perspective = P.identify_paper(body["messages"])[0]
        imgs = images_of(body)
        assert len(imgs) == (1 if perspective == "quality" else 2)
        assert all(im.format == "JPEG" and im.size == (512, 512) for im in imgs)  # 32 x 32 drawings at height 512
    rows = E.read_results(out)
    bad = [r for r in rows if "errors" in r]
    assert len(bad) == 1 and bad[0]["following"] is None and "after 2 tries" in bad[0]["errors"]["following"]
    assert bad[0]["preserving"] is not None  # the other perspectives of that item still count
    good = rows[1]
    assert good["following"]["yes"] is True and good["following"]["score"] == 5.0
    assert good["preserving"]["yes"] is True and good["quality"] == {
        "yes": False, "score": 3.5, "reason": "{'clear': 'no', 'score': 3.5}"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "paper"
    assert summary["judge"] == {"base_url": server.base_url, "protocol": "paper", "model": P.PAPER_JUDGE_MODEL}
    assert summary["overall"]["following"]["missing"] == 1 and summary["overall"]["following"]["n"] == n - 1
    with AnswerCache(out / "judge") as cache:
        records = cache.records()
    assert {r["protocol"] for r in records} == {"paper"} and {r["prompt_version"] for r in records} == {
        P.PAPER_PROMPT_VERSION}


def test_a_reference_sd15_folder_is_judged_with_the_paper_protocol_by_default(tmp_path, server):
    model = tmp_path / "stage2_reward_instruct_pix2pix"
    save_reference_folder(model)
    bench = real_edit_folder(tmp_path / "Real-Edit")  # photos of 50 x 38 and 41 x 60
    report = E.evaluate(model, bench, tmp_path / "out", changes={"num_inference_steps": 2, "resolution": 64},
                        base_url=server.base_url, client_options={"max_retries": 0}, n_boot=20, progress=False)
    assert report.summary["protocol"] == "paper" and report.summary["overall"]["following"]["n"] == 3
    sizes = {im.size for body in server.bodies for im in images_of(body)}
    assert sizes == {(int(512 * 50 / 38), 512), (int(512 * 41 / 60), 512)}


# --------------------------------------------------------------------------------------------------
# Refusals and caches
# --------------------------------------------------------------------------------------------------
def test_real_photos_without_a_judge_endpoint_are_refused_naming_the_option(toy_model, tmp_path, capsys):
    bench = real_edit_folder(tmp_path / "Real-Edit")
    rc = main(["evaluate", "--model", str(toy_model), "--bench", str(bench), "--out", str(tmp_path / "out"),
               "--no-progress", *STEPS])
    assert rc == 2 and "--base-url" in capsys.readouterr().err
    assert not (tmp_path / "out" / "edits").exists()  # refused before a single edit


def test_the_paper_protocol_without_an_endpoint_is_refused_naming_the_option(toy_model, toy_bench, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(toy_model), "--bench", str(toy_bench), "--out", str(tmp_path / "out"),
               "--protocol", "paper", "--no-progress", *STEPS])
    assert rc == 2 and "--base-url" in capsys.readouterr().err


def test_a_missing_key_is_refused_before_anything_is_edited(toy_model, toy_bench, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc = main(["evaluate", "--model", str(toy_model), "--bench", str(toy_bench), "--out", str(tmp_path / "out"),
               "--protocol", "paper", "--base-url", "https://api.openai.com/v1", "--no-progress", *STEPS])
    assert rc == 2 and "OPENAI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out" / "edits").exists()


def test_kit_and_paper_verdicts_never_mix_in_one_cache(toy_model, toy_bench, tmp_path, server):
    out = tmp_path / "out"
    kw = dict(changes={"num_inference_steps": 2}, n_boot=20, progress=False)
    kit = E.evaluate(toy_model, toy_bench, out, **kw)  # the local toy judge, kit protocol
    assert kit.summary["protocol"] == "kit"
    paper = E.evaluate(toy_model, toy_bench, out, base_url=server.base_url, protocol="paper",
                       client_options={"max_retries": 0}, **kw)
    n = len(kit.rows)
    assert len(server.bodies) == 3 * n  # nothing of the kit's answers was taken for a paper verdict
    assert paper.summary["protocol"] == "paper"
    E.evaluate(toy_model, toy_bench, out, base_url=server.base_url, protocol="paper", **kw)
    assert len(server.bodies) == 3 * n  # the paper answers are cached under their own keys
    again = E.evaluate(toy_model, toy_bench, out, **kw)
    assert again.rows == kit.rows  # the kit's answers are still there, and still the kit's
    with AnswerCache(out / "judge") as cache:
        records = cache.records()
    assert sorted(r["protocol"] for r in records) == ["kit"] * 3 * n + ["paper"] * 3 * n
    # the same judgement under both protocols: different keys
    item = E._bench_items(toy_bench, 1)[0]
    edit = out / "edits" / f"{item.id}.png"
    assert (JudgeRequest("following", "evaluate", item.instruction, item.image_path, edit).key("m")
            != P.PaperRequest("following", item.instruction, item.image_path, edit).key("m"))


def test_local_toy_judge_at_a_url_still_judges_real_layouts_with_the_kit_protocol(toy_model, tmp_path):
    bench = real_edit_folder(tmp_path / "Real-Edit")
    with ToyJudgeServer() as srv:
        report = E.evaluate(toy_model, bench, tmp_path / "out", changes={"num_inference_steps": 2},
                            base_url=srv.base_url, judge_model="toy-judge", n_boot=20, progress=False)
    assert report.summary["protocol"] == "kit" and report.summary["overall"]["quality"]["n"] == 3


def test_evaluation_reaches_an_azure_deployment_with_the_key_from_the_environment(toy_model, toy_bench, tmp_path,
                                                                                   server, monkeypatch, capsys):
    secret = "azure-test-key-0123456789abcdef"
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", secret)
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(toy_model), "--bench", str(toy_bench), "--out", str(out), "--protocol",
               "paper", "--base-url", server.base_url, "--azure-api-version", "2024-10-21", "--judge-model",
               "my-gpt4o-deployment", "--timeout", "30", "--no-progress", *STEPS, "--limit", "2"])
    assert rc == 0, capsys.readouterr().err
    assert len(server.requests) == 6
    for path, headers in server.requests:
        assert "/openai/deployments/my-gpt4o-deployment/chat/completions" in path and "api-version=2024-10-21" in path
        assert headers.get("api-key") == secret
    written = "".join(f.read_text() for f in out.rglob("*") if f.is_file() and f.suffix in (".json", ".jsonl"))
    assert secret not in written + capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["judge"]["model"] == "my-gpt4o-deployment"


def test_the_default_protocol_follows_the_model_and_the_judge(toy_bench, tmp_path):
    real = real_edit_folder(tmp_path / "Real-Edit")
    url = "http://127.0.0.1:9/v1"
    assert P.choose_protocol(None, "sd15", url, real) == "paper"  # numbers to set beside Table 1
    assert P.choose_protocol(None, "toy", url, real) == "kit"
    assert P.choose_protocol(None, "sd15", None, toy_bench) == "kit"  # the local toy judge speaks kit only
    assert P.choose_protocol(None, "sd15", url, toy_bench, judge_model="toy-judge") == "kit"
    assert P.choose_protocol("kit", "sd15", url, real) == "kit"
    with pytest.raises(ValueError, match="--protocol kit"):
        P.choose_protocol("paper", "sd15", url, toy_bench, judge_model="toy-judge")
    with pytest.raises(ValueError, match="--base-url"):
        P.choose_protocol(None, "toy", None, None, azure=True)

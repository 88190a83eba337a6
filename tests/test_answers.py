"""Answer kinds: extraction, normalisation, equivalence and abstention per kind; votes
that group equivalent answers; cascades that escalate abstentions; recorded data sets
of any kind (and malformed ones: one clear error)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from critpath.adapters import TokenLogprob, complete, make_request
from critpath.adapters.sim.answers import RecordedAnswers
from critpath.adapters.sim.clock import run_virtual
from critpath.cascades import (
    AbstentionScorer,
    Cascade,
    FunctionKind,
    LogprobScorer,
    Tier,
    Vote,
    kind_named,
)
from critpath.cascades.answers import (
    ChoiceKind,
    LiteralKind,
    MathKind,
    NumberKind,
    TextKind,
    extract_final,
)
from critpath.cascades.scorers import Candidate
from critpath.cli import main
from critpath.errors import ConfigError
from critpath.strategies import Replay, parse_strategies
from critpath.strategies.recorded import dataset_kind
from tests.scripted import Scripted

DATA = Path(os.environ.get("CRITPATH_DATA", Path(__file__).resolve().parents[3] / "shared/data"))

# ---- extraction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ('```json\n{"reasoning": "x", "answer": "42"}\n```', "42"),
        ('{"reasoning": "x", "answer": [1, 2]}', "[1, 2]"),
        ("We get $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
        ("Adding up, the answer is 1,000.", "1,000"),
        ("Work...\nFinal answer: **Paris**", "Paris"),
        ("Some reasoning.\n\n7\n", "7"),
        ('{"answer": null}', None),
        ("", None),
    ],
)
def test_extract_final_finds_the_answer_wherever_the_reply_puts_it(
    reply: str, answer: str | None
) -> None:
    assert extract_final(reply) == answer


def test_json_answers_keep_latex_backslashes_for_math_and_decode_newlines_otherwise() -> None:
    latex = '{"answer": "\\frac{1}{2}"}'  # invalid JSON escapes, as models write them
    assert MathKind().extract(latex) == "\\frac{1}{2}"
    assert LiteralKind().extract('{"answer": "\'a\\\\nb\'"}') == "'a\\nb'"


# ---- equivalence per kind -------------------------------------------------------------


def test_number_kind() -> None:
    k = NumberKind()
    assert k.equivalent("1,000", "1000.0")
    assert k.equivalent("$1000", "1000")
    assert k.equivalent("3/4", "0.75")
    assert not k.equivalent("1000", "1001")
    assert k.normalise("twelve") is None
    assert k.key("The answer is $1,200.00.") == "1200"


def test_math_kind_counts_equivalent_forms_equal() -> None:
    k = MathKind()
    for a, b in [("0.5", "\\frac12"), ("\\dfrac{1}{2}", "1/2"), ("2\\sqrt{5}", "\\sqrt{20}"),
                 ("(1,-2)", "(1, -2)"), ("x^2+1", "1+x^2"), ("-15", "-15.0")]:  # fmt: skip
        assert k.equivalent(a, b), (a, b)
    assert not k.equivalent("\\frac{3}{4}", "\\frac{4}{3}")
    assert not k.equivalent("x^2+1", "x^2-1")
    assert k.correct("\\text{Monday}", "\\text{Monday}")


def test_python_literal_kind_compares_values() -> None:
    k = LiteralKind()
    assert k.equivalent("[(4, 1), (2, 3)]", "[(4,1),(2,3)]")
    assert k.equivalent("'abc'", '"abc"')
    assert k.equivalent("{'a': 1, 'b': 2}", "{'b': 2, 'a': 1}")
    assert k.normalise("{'a': 1, 'b': 2}") == k.normalise("{'b': 2, 'a': 1}")
    assert not k.equivalent("'1 '", "'1'")  # spaces inside a string are its value
    assert k.normalise("hello world") is None  # not a literal: no answer of this kind
    assert k.strict(" 'a b' ") == "'a b'"


def test_text_and_choice_and_custom_kinds() -> None:
    assert TextKind().equivalent("  Paris. ", '"paris"')
    c = ChoiceKind()
    assert c.key("So the answer is (C).") == "C"
    assert c.key('{"answer": "b"}') == "B"
    assert c.key("Paris") is None

    def same_prefix(a: str, b: str) -> bool:
        return a.strip()[:3].lower() == b.strip()[:3].lower()

    own = FunctionKind(lambda a: a.strip().lower() or None, equivalent=same_prefix)
    assert own.equivalent("Monday", "mon")
    with pytest.raises(ConfigError):
        kind_named("roman_numerals")


@pytest.mark.parametrize("name", ["choice", "number", "math", "python_literal", "text"])
def test_every_kind_abstains_on_no_answer_or_i_dont_know(name: str) -> None:
    k = kind_named(name)
    assert k.abstains("")
    assert k.abstains('{"reasoning": "hard", "answer": "I don\'t know"}')
    assert k.abstains("I do not know.")


# ---- votes group equivalent answers ---------------------------------------------------


def _voter(name: str, answer: str) -> Scripted:
    return Scripted(name, words=("Reasoning. ", json.dumps({"answer": answer})), open_gate=True)


@pytest.mark.parametrize(
    ("kind", "forms", "other"),
    [
        ("math", ["\\frac{1}{2}", "0.5", "1/2"], "\\frac{1}{3}"),
        ("number", ["1,000", "1000.0", "$1000"], "999"),
        ("python_literal", ["[(1, 'a')]", '[(1,"a")]', "[ (1, 'a') ]"], "[(1, 'b')]"),
        ("text", ["Paris", "paris.", " PARIS "], "Lyon"),
        ("choice", ["(B)", "B", "b"], "C"),
    ],
)
async def test_equivalent_forms_vote_together(kind: str, forms: list[str], other: str) -> None:
    # Two of three voters agree in form; without equivalence the third form's
    # voters would be three separate answers and "other" would tie and could win.
    voters = [_voter("o1", other), _voter("o2", other)]
    voters += [_voter(f"f{i}", form) for i, form in enumerate(forms)]
    vote = Vote(voters, kind=kind, early_stop=False)
    result = await vote.decide(make_request(messages="q"))
    assert result.votes()[result.winner or ""] == 3
    assert result.agreement == pytest.approx(3 / 5)
    winner_text = vote.kind.extract(result.completion.text)
    assert winner_text in forms  # one of the group's own answers, as written


async def test_vote_abstainers_do_not_form_a_group() -> None:
    voters = [_voter("a", "I don't know"), _voter("b", "42"), Scripted("c", words=("",),
              open_gate=True)]  # fmt: skip
    result = await Vote(voters, kind="number").decide(make_request(messages="q"))
    assert result.winner == "42"
    assert [b.status for b in result.ballots] == ["abstained", "answered", "abstained"]


# ---- cascades escalate abstentions, per kind -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "abstaining", "answer"),
    [
        ("math", '{"answer": "I don\'t know"}', "\\frac{1}{2}"),
        ("number", "No idea what to say.\nI cannot determine it.", "12"),
        ("python_literal", '{"answer": "not a literal at all"}', "[1, 2]"),
        ("text", '{"answer": null}', "Paris"),
        ("choice", "Hmm, Paris?", "(A)"),
    ],
)
async def test_abstentions_escalate_per_kind(kind: str, abstaining: str, answer: str) -> None:
    cheap = Scripted("cheap", words=(abstaining,), open_gate=True)
    strong = _voter("strong", answer)
    cascade = Cascade([Tier(cheap, AbstentionScorer(kind), threshold=0.5), Tier(strong)])
    result = await cascade.decide(make_request(messages="q"))
    assert result.tier == 1
    assert result.escalations[0].reason.value == "abstained"
    # and an answer of the kind is accepted at the first tier
    cheap2 = _voter("cheap2", answer)
    cascade2 = Cascade([Tier(cheap2, AbstentionScorer(kind), threshold=0.5), Tier(strong)])
    assert (await cascade2.decide(make_request(messages="q"))).tier == 0


async def test_logprob_scorer_reads_the_free_form_answer_span() -> None:
    text = 'Work. {"answer": "42"}'
    lps = (TokenLogprob('Work. {"answer": "', -0.01), TokenLogprob("42", -0.7),
           TokenLogprob('"}', -0.01))  # fmt: skip
    model = Scripted("m", words=(text,), open_gate=True)
    completion = await complete(model, make_request(messages="q"))
    completion = replace(completion, logprobs=lps)
    score = await LogprobScorer("number").score(Candidate(make_request(messages="q"), completion))
    assert score.confidence == pytest.approx(0.4966, abs=1e-3)


# ---- recorded data sets of any kind ----------------------------------------------------


def _free_form(root: Path, *, kind: str | None, answers: list[str],
               preds: dict[str, list[str | None]]) -> Path:  # fmt: skip
    d = root / "set"
    (d / "responses").mkdir(parents=True)
    qs = [{"id": str(i), "question": f"Q{i}?", "answer": a} for i, a in enumerate(answers)]
    (d / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    for m, ps in preds.items():
        rows = [{"id": str(i), "pred": p, "output_chars": 200 + 40 * (i % 7)}
                for i, p in enumerate(ps)]  # fmt: skip
        (d / "responses" / f"{m}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (d / "models.json").write_text(json.dumps({m: {"params_b": 8} for m in preds}))
    if kind is not None:
        (d / "dataset.json").write_text(json.dumps({"answer_kind": kind}))
    return d


SMALL = {"calibration_fraction": 0.3, "strategies": [
    {"name": "vote3", "kind": "vote", "voters": {"select": "accurate", "n": 3}},
    {"name": "a>strongest", "kind": "cascade", "tiers": [
        {"model": {"select": "accurate", "n": 1}, "scorer": "abstention", "threshold": 0.5},
        {"model": {"select": "strongest"}}]},
]}  # fmt: skip


def test_replay_on_numbers_without_dataset_json(tmp_path: Path) -> None:
    n = 60
    answers = [str(1000 * i) for i in range(n)]
    preds: dict[str, list[str | None]] = {
        "commas": [f"{1000 * i:,}" for i in range(n)],  # right, in another form
        "dollars": [f"${1000 * i}" if i % 3 else "7" for i in range(n)],
        "floats": [f"{1000 * i}.0" if i % 2 else None for i in range(n)],
        "wrong": ["1" for _ in range(n)],
    }
    d = _free_form(tmp_path, kind=None, answers=answers, preds=preds)
    assert isinstance(dataset_kind(RecordedAnswers(d)), NumberKind)

    async def go() -> dict[str, object]:
        return await Replay(d, parse_strategies(SMALL)).run()

    out = run_virtual(go())
    assert out["answer_kind"] == "number"
    rows = {r["name"]: r for r in out["strategies"]}  # type: ignore[attr-defined]
    assert rows["commas"]["accuracy"] == 1.0
    assert rows["commas"]["strict_accuracy"] < 0.1  # "1,000" is not "1000" as a string
    assert rows["wrong"]["accuracy"] < 0.05
    assert rows["vote3"]["calls_per_query"] > 1
    for r in rows.values():
        assert r["accuracy"] >= r.get("strict_accuracy", 0.0)


def test_every_model_at_zero_is_an_error_not_a_benchmark(tmp_path: Path) -> None:
    d = _free_form(tmp_path, kind="python_literal", answers=["[1]"] * 30,
                   preds={"a": ["[2]"] * 30, "b": ["[3]"] * 30})  # fmt: skip
    with pytest.raises(ConfigError, match="every model scores 0"):
        run_virtual(Replay(d, parse_strategies(SMALL)).run())


def test_mostly_unreadable_answers_are_reported(tmp_path: Path) -> None:
    d = _free_form(tmp_path, kind="python_literal", answers=["'x'"] * 30,
                   preds={"good": ["'x'"] * 30, "bare": ["x"] * 30, "ok": ["'y'"] * 30,
                          "ok2": ["'x'"] * 30})  # fmt: skip
    out = run_virtual(Replay(d, parse_strategies(SMALL)).run())
    assert any(w.startswith("bare: 100%") for w in out["warnings"])


@pytest.mark.parametrize(
    ("file", "line", "content", "says"),
    [
        ("questions.jsonl", 2, '{"id": "1", "answer": "2"}', "field 'question' is missing"),
        ("questions.jsonl", 2, "not json", "not a JSON object"),
        (
            "questions.jsonl",
            2,
            '{"id": "1", "question": "q", "answer": "2", "options": "AB"}',
            "field 'options' must be a list of strings",
        ),
        ("responses/m.jsonl", 2, '{"id": "1", "pred": "2"}', "field 'output_chars' is missing"),
        (
            "responses/m.jsonl",
            2,
            '{"id": "1", "pred": ["2"], "output_chars": 3}',
            "field 'pred' must be",
        ),
        ("dataset.json", 1, '{"answer_kind": "roman"}', "unknown answer kind"),
    ],
)
def test_malformed_data_is_one_line_naming_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    line: int,
    content: str,
    says: str,
) -> None:  # fmt: skip
    d = _free_form(tmp_path, kind="number", answers=["1", "2", "3"],
                   preds={"m": ["1", "2", "3"]})  # fmt: skip
    path = d / file
    if file == "dataset.json":
        path.write_text(content)
    else:
        lines = path.read_text().splitlines()
        lines[line - 1] = content
        path.write_text("\n".join(lines))
    status = main(["bench", "cascade", "--data", str(d), "--plot", "", "--quiet"])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert says in err
    assert file.split("/")[-1] in err
    if file != "dataset.json":
        assert f":{line}:" in err


needs_data = pytest.mark.skipif(not (DATA / "math_l5").is_dir(), reason="no recorded data")


@needs_data
@pytest.mark.parametrize("name", ["math_l5", "crux"])
def test_recorded_free_form_sets_score_at_least_strict_match(name: str) -> None:
    rec = RecordedAnswers(DATA / name)
    kind = dataset_kind(rec)
    rec.reader = kind
    truth = {q.id: q.answer for q in rec.questions[:150]}
    for model in rec.available_models()[:6]:
        rows = rec.responses(model)
        eq = strict = 0
        for qid, answer in truth.items():
            pred = rows[qid]["pred"]
            if isinstance(pred, str):
                eq += kind.correct(pred, answer)
                strict += kind.strict(pred) == kind.strict(answer)
        assert eq >= strict, model

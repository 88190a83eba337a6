"""The ``critpath`` command fails cleanly: bad input is one line on stderr and a non-zero
exit status, never a traceback; the example chat service's command likewise."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from critpath import Graph
from critpath.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.chatbot.__main__ import main as chatbot_main  # noqa: E402


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---- critpath report ------------------------------------------------------------------


@pytest.fixture
def saved_report(tmp_path: Path) -> Path:
    g = Graph("tiny", inputs=["x"])

    @g.step
    def double(x: int) -> int:
        return 2 * x

    @g.step
    def plus_one(double: int) -> int:
        return double + 1

    result = asyncio.run(g.run({"x": 3}))
    return result.report.save_json(tmp_path / "run.json")


def test_report_prints_a_saved_report_and_draws_it(
    saved_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "t.html"
    assert main(["report", str(saved_report), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "plus_one" in out
    assert str(html) in out
    assert html.read_text().lower().startswith("<!doctype html>")


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["no such file"]),
        ('{"graph": ', ["not valid JSON"]),
        ("[" * 200_000 + "]" * 200_000, ["nested too deeply"]),
        ('{"graph": NaN}', ["NaN"]),
        ('{"makespan": Infinity}', ["Infinity"]),
        ('{"makespan": -Infinity}', ["-Infinity"]),
        ("[1, 2]", ["not a critpath run report"]),
        ('{"graph": "g"}', ["not a critpath run report", "more"]),
    ],
    ids=["missing", "truncated", "deep", "nan", "infinity", "minus-infinity", "list", "fields"],
)
def test_report_rejects_a_bad_file_in_one_line(
    content: str | None, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "nope.json") if content is None else _write(tmp_path / "r.json", content)
    assert main(["report", path]) == 1
    _one_line_error(capsys, "critpath report:", *words)


def test_report_rejects_an_undecodable_file_and_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert main(["report", str(binary)]) == 1
    _one_line_error(capsys, "cannot read")
    assert main(["report", str(tmp_path)]) == 1
    _one_line_error(capsys, "cannot read")


def test_report_with_a_timeline_nowhere_to_go_is_one_line(
    saved_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(saved_report), "--html", str(tmp_path / "no" / "t.html")]) == 2
    _one_line_error(capsys, "no folder")


def test_report_of_a_hand_edited_file_still_prints(
    saved_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(saved_report.read_text())
    data["steps"] = []  # the critical path now names steps the report does not have
    assert main(["report", _write(tmp_path / "edited.json", json.dumps(data))]) == 0
    assert "tiny" in capsys.readouterr().out


# ---- bad arguments, every command -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], ["COMMAND"]),
        (["teleport"], ["invalid choice"]),
        (["demo", "--questions", "0"], ["--questions"]),
        (["demo", "--model", "x"], ["--base-url"]),
        (["demo", "--base-url", "http://127.0.0.1:9/v1"], ["--model"]),
        (["demo", "--out", "/no/such/folder/t.html"], ["no folder"]),
        (["demo", "--seed", "abc"], ["--seed"]),
        (["loadtest", "--strategy", "large", "--slo-ms", "-1"], ["--slo-ms"]),
        (["loadtest", "--strategy", "large", "--slo-ms", "nan"], ["--slo-ms", "nan"]),
        (["loadtest", "--strategy", "large", "--drain", "-1"], ["--drain"]),
        (["loadtest", "--strategy", "large", "--rate", "inf"], ["--rate"]),
        (["loadtest", "--strategy", "large", "--requests", "0"], ["--requests"]),
        (["loadtest", "--strategy", "large", "--time-scale", "0"], ["--time-scale"]),
        (["bench", "runtime", "--steps", "x"], ["--steps"]),
        (["bench", "runtime", "--bogus"], ["--bogus"]),
        (["sim-server"], ["--port"]),
        (["sim-server", "--port", "99999"], ["65535"]),
        (["sim-server", "--port", "0", "--time-scale", "-1"], ["--time-scale"]),
        (["sim-server", "--port", "0", "--replicas", "0"], ["--replicas"]),
        (["sim-server", "--port", "0", "--faults", "error=2"], ["bad fault"]),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    _one_line_error(capsys, *words)


@pytest.mark.parametrize(
    "argv",
    [
        ["loadtest", "--strategy", "teleport"],
        ["loadtest", "--strategy", "large", "--rates", "1,-2"],
        ["loadtest", "--strategy", "large", "--rates", "abc"],
        ["loadtest", "--url", "http://example.com/chat"],
        ["bench", "runtime", "--steps", "0"],
    ],
)
def test_bad_values_found_later_are_one_line_too(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) != 0
    _one_line_error(capsys, f"critpath {argv[0]}")


def test_help_still_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--help"]) == 0
    assert "--slo-ms" in capsys.readouterr().out


# ---- the example chat service's command --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--host", "0.0.0.0"], ["loopback", "--allow-remote"]), (["--port", "70000"], ["port"])],
)
def test_the_chat_service_refuses_bad_hosts_and_ports_in_one_line(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert chatbot_main(argv) == 2
    _one_line_error(capsys, "python -m examples.chatbot:", *words)

"""A real daemon with the voice models, as its operator and unmodified clients meet it (issue 13).

One `edge-agent run` subprocess for the module (loading Whisper, piper and the
LLM takes seconds); the `openai` package talks to it unchanged, and the CLI's
`models list`, `ask`, `chat` and `listen` are run as a user types them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.voice.postprocess import word_errors
from tests import speech
from tests.conftest import DaemonProcess, free_port
from tests.daemon_support import agent_cli, spawn_run, voice_daemon
from tests.voice_fixtures import require_models


@pytest.fixture(scope="module")
def voiced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    # as an operator would: a token for the clients (`T=$(edge-agent tokens create ...)`)
    with voice_daemon(
        tmp_path_factory.mktemp("voiced"),
        token_name="clients",
        extra_env={"EDGE_AGENT_SENSORS__ENABLED": "false"},
    ) as daemon:
        yield daemon


def cli(
    daemon: DaemonProcess, *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return agent_cli(daemon.env, *args, stdin=stdin, timeout=timeout)


def openai_client(daemon: DaemonProcess):  # type: ignore[no-untyped-def]
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        base_url=daemon.url + "/v1", api_key=daemon.env["EDGE_AGENT_TOKEN"], timeout=120, max_retries=0
    )


def test_openai_models_list_sees_the_served_models(voiced: DaemonProcess) -> None:
    models = openai_client(voiced).models.list()
    ids = [m.id for m in models.data]
    assert {"whisper-tiny-en", "piper-joe-medium", "smollm2-135m", "silero-vad"} <= set(ids), ids
    first = models.data[0]
    assert first.object == "model" and first.owned_by == "edge-agent" and first.created > 1_600_000_000
    # the manager's own fields ride along, and the project's earlier shape still answers
    req = urllib.request.Request(
        voiced.url + "/v1/models", headers={"Authorization": f"Bearer {voiced.env['EDGE_AGENT_TOKEN']}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["object"] == "list" and body["data"][0]["state"] in ("loaded", "unloaded", "loading")
    assert [m["name"] for m in body["models"]] == [m["id"] for m in body["data"]]


def test_openai_chat_with_and_without_stream(voiced: DaemonProcess) -> None:
    client = openai_client(voiced)
    done = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert done.choices[0].message.content and done.choices[0].message.role == "assistant"
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, stream=True
        )
        if chunk.choices
    ]
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_openai_transcription_and_speech(voiced: DaemonProcess, tmp_path: Path) -> None:
    client = openai_client(voiced)
    sentence = "Open the passenger window halfway."
    wav = speech.wav_file(speech.speak(sentence), tmp_path / "q.wav")
    with wav.open("rb") as fh:
        text = client.audio.transcriptions.create(model="whisper-1", file=fh).text
    assert word_errors(sentence, text)[0] <= 1, text
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there.", response_format="wav"
    )
    with wave.open(io.BytesIO(audio.read())) as w:
        assert w.getframerate() >= 16000 and w.getnframes() > w.getframerate() * 0.3


def test_models_list_shows_what_the_daemon_serves(voiced: DaemonProcess) -> None:
    done = cli(voiced, "models", "list")
    assert done.returncode == 0, done.stderr
    assert "served by the running daemon" in done.stdout and "whisper-tiny-en" in done.stdout, done.stdout
    done = cli(voiced, "models", "list", "--json")
    names = {m["name"] for m in json.loads(done.stdout)}
    assert "piper-joe-medium" in names


def test_ask_uses_the_running_daemon_and_says_so(voiced: DaemonProcess) -> None:
    started = time.monotonic()
    done = cli(voiced, "ask", "play some jazz", "--json")
    assert done.returncode == 0, done.stderr
    assert "using the running daemon" in done.stderr
    answer = json.loads(done.stdout)
    assert answer["intent"]["name"] == "media.play" and answer["intent"]["slots"]["source"] == "jazz"
    assert time.monotonic() - started < 10  # no model loads in the CLI process
    done = cli(voiced, "ask", "play the next song", "--json")
    assert json.loads(done.stdout)["intent"]["name"] == "media.next", done.stdout


def test_ask_loads_models_locally_when_no_daemon_answers(voiced: DaemonProcess) -> None:
    env = {**voiced.env, "EDGE_AGENT_API__PORT": str(free_port())}
    done = agent_cli(env, "ask", "play some jazz", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no daemon answers; loading the voice models in this process" in done.stderr
    assert "jazz" in done.stdout.lower()


def test_chat_keeps_the_conversation(voiced: DaemonProcess) -> None:
    done = cli(voiced, "chat", stdin="My name is Alice.\nWhat is my name?\n\n")
    assert done.returncode == 0, done.stderr
    assert "using the running daemon" in done.stderr
    replies = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2 and "alice" in replies[-1].lower(), done.stdout


def test_listen_transcribes_the_whole_file_segment_by_segment(voiced: DaemonProcess, tmp_path: Path) -> None:
    sentences = [
        "Turn on the air conditioning.",
        "Navigate to the central train station.",
        "How much battery do we have left?",
    ]
    pcm = speech.silence(300)
    for s in sentences:
        pcm += speech.speak(s) + speech.silence(1200)
    wav = speech.wav_file(pcm, tmp_path / "three.wav")
    done = cli(voiced, "listen", "--input", str(wav), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["segments"]) == 3, out
    reference = " ".join(sentences)
    errors, words = word_errors(reference, out["text"])
    assert errors / words < 0.15, out["text"]
    starts = [s["start"] for s in out["segments"]]
    assert starts == sorted(starts)
    all_words = [w for s in out["segments"] for w in s["words"]]
    assert len(all_words) >= words - 2
    assert all(w["start"] <= w["end"] for w in all_words)
    assert [w["start"] for w in all_words] == sorted(w["start"] for w in all_words)
    # the third sentence's words lie in the third segment's time span
    third = out["segments"][2]
    assert all(third["start"] - 0.05 <= w["start"] <= third["end"] + 0.05 for w in third["words"])
    # --first keeps the old one-utterance behaviour
    first = cli(voiced, "listen", "--input", str(wav), "--first")
    assert first.returncode == 0, first.stderr
    assert word_errors(sentences[0], first.stdout.strip())[0] <= 1, first.stdout


def _plain_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EDGE_AGENT_DATA_DIR": str(tmp_path / "data"),
        "EDGE_AGENT_API__PORT": str(free_port()),
    }


def test_say_without_a_speaker_gives_only_the_clear_error(tmp_path: Path) -> None:
    require_models("piper-joe-medium")
    done = agent_cli({**_plain_env(tmp_path), "AUDIODEV": "none"}, "say", "Hello there.", timeout=120)
    import pyaudio

    pa = pyaudio.PyAudio()
    try:
        has_speaker = pa.get_device_count() > 0 and pa.get_default_output_device_info() is not None
    except OSError:
        has_speaker = False
    finally:
        pa.terminate()
    if has_speaker:
        pytest.skip("this machine has a speaker")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line
    assert (
        "cannot open the speaker" in done.stderr
        and "ALSA lib" not in done.stderr
        and "Jack" not in done.stderr
    )


def test_wake_json_reports_the_detections(tmp_path: Path) -> None:
    require_models("wake-okay-nabu", "silero-vad")
    said = speech.speak("Okay Nabu, open the passenger window.")
    wav = speech.wav_file(speech.silence(500) + said + speech.silence(500), tmp_path / "wake.wav")
    done = agent_cli(_plain_env(tmp_path), "wake", "--input", str(wav), "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)["detections"]
    assert [h["phrase"] for h in hits] == ["Okay Nabu"] and 0.4 < hits[0]["t_s"] < 0.5 + len(said) / 32000


def test_chat_without_a_daemon_loads_the_model_here_and_remembers_the_name(tmp_path: Path) -> None:
    require_models("smollm2-135m")
    done = agent_cli(
        _plain_env(tmp_path), "chat", stdin="Hi, my name is Bob.\nWhat is my name?\n\n", timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no daemon answers; loading the voice models in this process" in done.stderr
    replies = [line for line in done.stdout.splitlines() if line.strip()]
    assert replies and replies[-1] == "Your name is Bob.", done.stdout


def test_ask_a_spoken_question_through_the_daemon_and_write_the_answer(
    voiced: DaemonProcess, tmp_path: Path
) -> None:
    wav = speech.wav_file(speech.speak("Play the next song."), tmp_path / "q.wav")
    out = tmp_path / "answer.wav"
    done = cli(voiced, "ask", "--input", str(wav), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert "using the running daemon" in done.stderr
    answer = json.loads(done.stdout)
    assert word_errors("play the next song", answer["transcript"])[0] <= 1, answer
    assert answer["intent"]["name"] == "media.next"
    with wave.open(str(out)) as w:
        assert w.getnframes() > w.getframerate() * 0.3


def _log_messages(text: str) -> list[str]:
    """The daemon's JSON log messages, in order, from a stderr shared with the engines' native code.

    Vosk (Kaldi) and the ggml engines write their load messages straight to fd 2
    while the daemon logs, so a JSON line can arrive behind a fragment of theirs
    on the same line: each line is read from its first ``{"`` on.
    """
    decoder, msgs = json.JSONDecoder(), []
    for line in text.splitlines():
        start = line.find('{"')
        while start >= 0:
            try:
                record, _ = decoder.raw_decode(line, start)
            except ValueError:
                start = line.find('{"', start + 1)
                continue
            if isinstance(record, dict) and "msg" in record:
                msgs.append(str(record["msg"]))
            break
    return msgs


@pytest.mark.parametrize("delay", [1.0, 3.0])
def test_sigterm_while_the_voice_models_load_exits_0_within_5_s(tmp_path: Path, delay: float) -> None:
    require_models()
    env = {**_plain_env(tmp_path), "EDGE_AGENT_VOICE__ENABLED": "on", "EDGE_AGENT_LOG__FORMAT": "json"}
    log_path = tmp_path / "daemon.log"
    proc = spawn_run(env, log_path)
    try:
        time.sleep(delay)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()[-3000:]
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    msgs = _log_messages(log_path.read_text())
    stop = next((i for i, m in enumerate(msgs) if m.startswith("stopping")), None)
    assert stop is not None, log_path.read_text()[-3000:]
    assert "edge-agent ready" not in msgs[stop:], msgs
    # every child ended with its service: nothing left for the stop to reap (the LAN search's child
    # cancelled mid-search, no multiprocessing resource tracker started by faster-whisper's tqdm)
    assert not [m for m in msgs if "still running at stop" in m], msgs


def test_ask_without_a_token_says_what_to_do(voiced: DaemonProcess) -> None:
    env = {k: v for k, v in voiced.env.items() if k != "EDGE_AGENT_TOKEN"}
    done = agent_cli(env, "ask", "play some jazz", timeout=60)
    # root reads through the local socket, but asking acts: it needs an operator token
    assert done.returncode == 1, done.stdout
    assert "--token" in done.stderr and "--local" in done.stderr and "Traceback" not in done.stderr

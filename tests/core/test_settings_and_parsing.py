"""Settings from secrets and environment; predictions parsed from what the API really sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from comet.config import APP_DIR, DEFAULT_BASE_URL, Settings
from comet.prediction import Prediction, is_valid_id, progress_from_logs


def test_nothing_configured_means_demo_mode_with_defaults():
    settings = Settings.from_sources({}, {})
    assert settings.demo
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.data_dir == APP_DIR / "data"


def test_secrets_win_over_the_environment_and_blank_values_count_as_unset():
    settings = Settings.from_sources(
        {"COMETAPI_KEY": "from-secrets", "COMETAPI_BASE_URL": "  "},
        {"COMETAPI_KEY": "from-env", "COMETAPI_BASE_URL": "https://gateway.example.com/", "COMET_DATA_DIR": "/tmp/x"},
    )
    assert not settings.demo
    assert settings.api_key == "from-secrets"
    assert settings.base_url == "https://gateway.example.com"
    assert settings.data_dir == Path("/tmp/x")


def test_the_key_is_not_in_the_settings_repr():
    settings = Settings.from_sources({"COMETAPI_KEY": "sk-very-secret-value"}, {})
    assert "sk-very-secret-value" not in repr(settings)


@pytest.mark.parametrize("url", ["api.cometapi.com", "ftp://api.cometapi.com", "https://", "https://u:p@host", "https://h/?a=1"])
def test_a_malformed_base_url_is_refused_with_a_clear_message(url):
    with pytest.raises(ValueError, match="COMETAPI_BASE_URL"):
        Settings.from_sources({}, {"COMETAPI_BASE_URL": url})


# The example answer from CometAPI's own page (seeds/), with an unknown extra field added.
SEED_ANSWER = {
    "id": "q4chw5rey9rmt0cww76t4h3ma4",
    "model": "black-forest-labs/flux-schnell",
    "version": "hidden",
    "input": {"aspect_ratio": "1:1", "output_format": "webp", "output_quality": 80, "prompt": "A paper boat."},
    "logs": "",
    "output": None,
    "data_removed": False,
    "error": None,
    "source": "api",
    "status": "starting",
    "created_at": "2026-03-12T11:27:18.258Z",
    "urls": {"get": "https://api.replicate.com/v1/predictions/q4chw5rey9rmt0cww76t4h3ma4"},
    "something_new": {"nested": True},
}


def test_the_documented_answer_parses():
    prediction = Prediction.from_json(SEED_ANSWER)
    assert prediction.status == "starting" and not prediction.is_terminal
    assert prediction.output == []
    assert prediction.prompt == "A paper boat."
    assert prediction.created_at.isoformat() == "2026-03-12T11:27:18.258000+00:00"


@pytest.mark.parametrize(
    "output, expected",
    [
        (None, []),
        ("https://x/a.webp", ["https://x/a.webp"]),
        (["https://x/a.webp", "https://x/b.webp"], ["https://x/a.webp", "https://x/b.webp"]),
        ("data:image/png;base64,AAAA", ["data:image/png;base64,AAAA"]),
        ([None, "", "https://x/a"], ["https://x/a"]),
        ({"weird": 1}, []),
    ],
)
def test_outputs_are_always_a_list(output, expected):
    assert Prediction.from_json({**SEED_ANSWER, "status": "succeeded", "output": output}).output == expected


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled", "aborted"])
def test_every_terminal_status_ends_polling(status):
    assert Prediction.from_json({**SEED_ANSWER, "status": status}).is_terminal


def test_an_error_ends_polling_even_with_a_running_status():
    assert Prediction.from_json({**SEED_ANSWER, "status": "processing", "error": "boom"}).is_terminal


def test_timings_come_from_metrics_or_timestamps():
    prediction = Prediction.from_json(
        {
            **SEED_ANSWER,
            "status": "succeeded",
            "started_at": "2026-03-12T11:27:20.258Z",
            "completed_at": "2026-03-12T11:27:23.758Z",
        }
    )
    assert prediction.queue_time == pytest.approx(2.0)
    assert prediction.run_time == pytest.approx(3.5)
    with_metrics = Prediction.from_json({**SEED_ANSWER, "metrics": {"predict_time": 1.25}})
    assert with_metrics.run_time == 1.25


def test_progress_and_seed_come_from_tqdm_logs():
    logs = "Using seed: 4242\n  0%|          | 0/4 [00:00<?, ?it/s]\n 50%|█████     | 2/4 [00:01<00:01,  2.00it/s]\n"
    prediction = Prediction.from_json({**SEED_ANSWER, "status": "processing", "logs": logs})
    assert prediction.progress == 0.5
    assert prediction.seed == 4242
    assert progress_from_logs("no progress here") is None


@pytest.mark.parametrize("bad", [None, "", "short", "../etc/passwd", "a b c d e f", "id%2F..", "x" * 65, 12345678])
def test_malformed_ids_are_rejected(bad):
    assert not is_valid_id(bad)
    with pytest.raises(ValueError):
        Prediction.from_json({**SEED_ANSWER, "id": bad})


@pytest.mark.parametrize(
    "line, seconds",
    [(" 50%|█████     | 2/4 [00:01<00:01,  1.05s/it]\n", 4.2),
     (" 25%|██▌       | 7/28 [00:01<00:05,  4.00it/s]\n", 7.0),
     (" 50%|█████     | 2/4 [00:01<00:01, ?it/s]\n", None),
     ("Using seed: 42\n", None)],
)
def test_the_run_time_is_estimated_from_the_logs_rate_only_when_there_is_one(line, seconds):
    from comet.prediction import run_estimate

    assert run_estimate(line) == (pytest.approx(seconds) if seconds else None)
    running = Prediction.from_json({"id": "abcdefgh", "status": "processing", "logs": line,
                                    "started_at": "2026-11-30T10:00:00Z"})
    done = Prediction.from_json({"id": "abcdefgh", "status": "succeeded", "logs": line,
                                 "started_at": "2026-11-30T10:00:00Z"})
    assert (running.expected_end is None) == (seconds is None) and done.expected_end is None


def test_too_many_or_too_long_output_links_are_cut_with_a_note():
    fine = Prediction.from_json({"id": "abcdefgh", "status": "succeeded", "output": ["https://x/a.png"] * 4})
    flood = Prediction.from_json({"id": "abcdefgh", "status": "succeeded",
                                  "output": ["https://x/a.png"] * 40 + ["https://x/" + "a" * 10_000]})
    assert len(fine.output) == 4 and fine.problems == ()
    assert len(flood.output) == 16 and any("output links" in p for p in flood.problems)

"""The HTTP client against the local stand-in, over real loopback sockets."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import requests

from comet import errors
from comet.client import Client, Timeouts
from comet.sim import Sim
from support.api import FAST_RETRY, KEY, api_requests

SCHNELL = "black-forest-labs/flux-schnell"


# ---- the happy path, per model ----------------------------------------------------------

@pytest.mark.parametrize(
    "model, extra, expected_count",
    [
        ("flux-schnell", {"num_outputs": 3}, 3),
        ("flux-dev", {"num_outputs": 2}, 2),
        ("flux-pro", {}, 1),
        ("flux-1.1-pro", {}, 1),
        ("flux-1.1-pro-ultra", {}, 1),
        ("flux-kontext-pro", {"aspect_ratio": "1:1"}, 1),
        ("flux-kontext-max", {"aspect_ratio": "1:1"}, 1),
        ("flux-2-pro", {}, 1),
        ("flux-2-dev", {}, 1),
        ("flux-2-flex", {}, 1),
    ],
)
def test_a_prompt_becomes_one_post_and_finished_outputs_for_every_model(sim, client, model, extra, expected_count):
    model_input = {"prompt": "a paper boat at sunrise", **extra}
    created = client.create(f"black-forest-labs/{model}", model_input)
    assert created.status == "starting" and not created.is_terminal
    assert created.model == f"black-forest-labs/{model}"

    done = client.wait(created.id, timeout=10, interval=0.05)

    assert done.status == "succeeded"
    assert len(done.output) == expected_count  # a single string upstream is a one-item list here
    assert all(url.startswith(sim.url + "/") for url in done.output)
    assert done.run_time is not None and done.progress == 1.0
    posts = api_requests(sim, "POST")
    assert len(posts) == 1 and posts[0]["json"] == {"input": model_input}
    assert posts[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_list_and_single_string_outputs_both_become_one_list(sim, client):
    schnell = client.wait(client.create(SCHNELL, {"prompt": "a"}).id, timeout=10, interval=0.05)
    pro = client.wait(client.create("black-forest-labs/flux-pro", {"prompt": "a"}).id, timeout=10, interval=0.05)
    raw = {p.id: requests.get(f"{sim.url}/replicate/v1/predictions/{p.id}", headers={"Authorization": f"Bearer {KEY}"},
                              timeout=5).json()["output"] for p in (schnell, pro)}
    assert isinstance(raw[schnell.id], list) and isinstance(raw[pro.id], str)
    assert len(schnell.output) == len(pro.output) == 1


def test_failed_and_aborted_predictions_are_terminal_with_their_error(client):
    failed = client.wait(client.create(SCHNELL, {"prompt": "x [sim:fail]"}).id, timeout=10, interval=0.05)
    aborted = client.wait(client.create(SCHNELL, {"prompt": "x [sim:abort]"}).id, timeout=10, interval=0.05)
    assert (failed.status, failed.is_terminal, failed.output) == ("failed", True, [])
    assert failed.error
    assert (aborted.status, aborted.is_terminal) == ("aborted", True)


def test_cancel_stops_a_running_prediction(sim, client):
    created = client.create(SCHNELL, {"prompt": "slow one [sim:slow]"})
    canceled = client.cancel(created.id)
    assert canceled.status == "canceled" and canceled.is_terminal
    assert client.get(created.id).status == "canceled"


def test_a_server_without_a_cancel_route_says_so(sim, client):
    created = client.create(SCHNELL, {"prompt": "x [sim:slow]"})
    sim.cancel_supported = False
    with pytest.raises(errors.CannotCancel, match="cannot cancel"):
        client.cancel(created.id)


# ---- errors become one small tree, with the request id ---------------------------------

def test_wrong_key_is_an_auth_error_with_the_request_id():
    with Sim(key="the-right-key") as sim, Client(sim.url, "a-wrong-key", retry=FAST_RETRY) as client:
        with pytest.raises(errors.AuthError) as caught:
            client.create(SCHNELL, {"prompt": "a"})
    assert caught.value.status == 401
    assert caught.value.request_id
    assert "COMETAPI_KEY" in caught.value.message
    assert "a-wrong-key" not in str(caught.value)


def test_invalid_input_is_reported_with_the_servers_words(client):
    with pytest.raises(errors.InvalidInput) as caught:
        client.create(SCHNELL, {"aspect_ratio": "1:1"})
    assert caught.value.status == 422
    assert "prompt" in caught.value.message


def test_unknown_model_is_not_found_with_request_id(client):
    with pytest.raises(errors.NotFound) as caught:
        client.create("black-forest-labs/flux-nope", {"prompt": "a"})
    assert caught.value.status == 404 and caught.value.request_id
    assert "flux-nope" in caught.value.message
    assert "(request id" not in caught.value.message  # shown once, by str(), not twice


def test_a_500_that_means_bad_request_is_invalid_input(sim, client):
    sim.add_fault(route="create", kind="500-invalid")
    with pytest.raises(errors.InvalidInput):
        client.create(SCHNELL, {"prompt": "a"})


def test_unknown_prediction_is_not_found(client):
    with pytest.raises(errors.NotFound):
        client.get("abcdefghijklmnopqrstuvwxyz")


def test_html_redirect_is_a_wrong_base_url_and_is_not_followed(sim, client):
    sim.add_fault(route="get", kind="301")
    created = client.create(SCHNELL, {"prompt": "a"})
    with pytest.raises(errors.WrongEndpoint, match="check the base URL"):
        client.get(created.id)
    assert len(api_requests(sim, "GET")) == 1


def test_a_wrong_base_path_answers_html_and_says_check_the_base_url(sim):
    with Client(sim.url + "/v2", KEY, retry=FAST_RETRY) as client:
        with pytest.raises(errors.WrongEndpoint):
            client.create(SCHNELL, {"prompt": "a"})


def test_malformed_json_is_a_bad_response(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.add_fault(route="get", kind="malformed")
    with pytest.raises(errors.BadResponse):
        client.get(created.id)


def test_unknown_status_is_kept_as_is_and_not_terminal(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.add_fault(route="get", kind="status:queued")
    prediction = client.get(created.id)
    assert prediction.status == "queued"
    assert not prediction.is_terminal and not prediction.is_known_status


# ---- status calls are retried; the create call never is ---------------------------------

@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "524", "drop"])
def test_status_calls_survive_transient_failures(sim, client, kind):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.clear_requests()
    sim.add_fault(route="get", kind=kind, times=2)
    assert client.get(created.id).id == created.id
    assert len(api_requests(sim, "GET")) == 3


def test_persistent_server_errors_end_after_bounded_attempts(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.clear_requests()
    sim.add_fault(route="get", kind="503", times=-1)
    with pytest.raises(errors.ServerError) as caught:
        client.get(created.id)
    assert caught.value.status == 503 and caught.value.retryable
    assert len(api_requests(sim, "GET")) == FAST_RETRY.attempts + 1


def test_gateway_timeout_524_is_named_as_such(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.add_fault(route="get", kind="524", times=-1)
    with pytest.raises(errors.ServerError, match="524"):
        client.get(created.id)


def test_retry_after_is_honoured_on_status_calls(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.clear_requests()
    sim.add_fault(route="get", kind="429", retry_after=1)
    started = time.monotonic()
    assert client.get(created.id).id == created.id
    gets = api_requests(sim, "GET")
    assert len(gets) == 2
    assert gets[1]["time"] - gets[0]["time"] >= 0.95
    assert time.monotonic() - started < 4


def test_a_long_retry_after_is_handed_back_instead_of_blocking(sim, client):
    created = client.create(SCHNELL, {"prompt": "a"})
    sim.clear_requests()
    sim.add_fault(route="get", kind="429", retry_after=120)
    started = time.monotonic()
    with pytest.raises(errors.RateLimited) as caught:
        client.get(created.id)
    assert caught.value.retry_after == 120
    assert time.monotonic() - started < 2
    assert len(api_requests(sim, "GET")) == 1


def test_a_slow_status_answer_is_retried_after_the_read_timeout(sim):
    with Client(sim.url, KEY, retry=FAST_RETRY, timeouts=Timeouts(read_status=0.5)) as client:
        created = client.create(SCHNELL, {"prompt": "a"})
        sim.clear_requests()
        sim.add_fault(route="get", kind="hang", delay=3)
        assert client.get(created.id).id == created.id
    assert len(api_requests(sim, "GET")) == 2


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "524"])
def test_a_create_that_gets_a_server_error_is_not_resent(sim, client, kind):
    sim.add_fault(route="create", kind=kind)
    with pytest.raises(errors.CreateUncertain, match="may still have been accepted"):
        client.create(SCHNELL, {"prompt": "a"})
    assert len(api_requests(sim, "POST")) == 1


def test_a_create_whose_answer_never_comes_is_uncertain_and_not_resent(sim):
    with Client(sim.url, KEY, retry=FAST_RETRY, timeouts=Timeouts(read_create=0.5)) as client:
        sim.add_fault(route="create", kind="hang", delay=3)
        with pytest.raises(errors.CreateUncertain):
            client.create(SCHNELL, {"prompt": "a"})
    assert len(api_requests(sim, "POST")) == 1


def test_a_dropped_create_is_uncertain_and_not_resent(sim, client):
    sim.add_fault(route="create", kind="drop")
    with pytest.raises(errors.CreateUncertain):
        client.create(SCHNELL, {"prompt": "a"})
    assert len(api_requests(sim, "POST")) == 1


def test_a_rate_limited_create_is_not_resent(sim, client):
    sim.add_fault(route="create", kind="429", retry_after=1)
    with pytest.raises(errors.RateLimited):
        client.create(SCHNELL, {"prompt": "a"})
    assert len(api_requests(sim, "POST")) == 1


def test_nothing_listening_is_a_connection_failure_not_an_uncertain_create():
    with Sim() as sim:
        dead_url = sim.url
    with Client(dead_url, KEY, retry=FAST_RETRY) as client:
        with pytest.raises(errors.ConnectionFailed):
            client.create(SCHNELL, {"prompt": "a"})


# ---- the key goes to the base URL and nowhere else ---------------------------------------

def test_ids_are_validated_before_any_request(sim, client):
    for bad in ["", "../../v1/account", "abc def ghi", "a/b/c/d/e/f", "%2e%2e%2fadmin", "x" * 200, None]:
        with pytest.raises(errors.InvalidId):
            client.get(bad)
        with pytest.raises(errors.InvalidId):
            client.cancel(bad)
    with pytest.raises(errors.InvalidInput):
        client.create("../../etc", {"prompt": "a"})
    assert sim.requests == []


def test_no_request_ever_goes_to_the_urls_the_api_hands_out(sim, client):
    done = client.wait(client.create(SCHNELL, {"prompt": "a"}).id, timeout=10, interval=0.05)
    handed_out = requests.get(f"{sim.url}/replicate/v1/predictions/{done.id}", timeout=5,
                              headers={"Authorization": f"Bearer {KEY}"}).json()["urls"]
    assert "replicate.com" in handed_out["get"]
    sim.clear_requests()
    client.get(done.id)
    assert {r["path"].split("/")[1] for r in sim.requests} == {"replicate"}


class _RedirectTo(http.server.BaseHTTPRequestHandler):
    target = ""

    def _redirect(self):
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args):
        pass


def test_a_redirect_to_another_host_is_not_followed_and_the_key_stays_home():
    with Sim() as elsewhere:
        _RedirectTo.target = elsewhere.url
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectTo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with Client(f"http://127.0.0.1:{server.server_port}", KEY, retry=FAST_RETRY) as client:
                with pytest.raises(errors.WrongEndpoint):
                    client.create(SCHNELL, {"prompt": "a"})
                with pytest.raises(errors.WrongEndpoint):
                    client.get("abcdefghijklmnopqrstuvwxyz")
        finally:
            server.shutdown()
            server.server_close()
        assert elsewhere.requests == []


def test_the_key_never_appears_in_repr_or_errors(sim):
    with Client(sim.url, KEY, retry=FAST_RETRY) as client:
        assert KEY not in repr(client)
        sim.add_fault(route="create", kind="500")
        with pytest.raises(errors.CometError) as caught:
            client.create(SCHNELL, {"prompt": KEY})
        assert KEY not in str(caught.value)


def test_sessions_are_reused_across_threads_not_piled_up(sim, client):
    # Streamlit runs every script run on a new thread: the client must not keep one session
    # (and one open connection) per thread that ever used it.
    for n in range(30):
        worker = threading.Thread(target=client.create, args=(SCHNELL, {"prompt": f"run {n}"}))
        worker.start()
        worker.join()
    assert len(api_requests(sim, "POST")) == 30
    assert len(client._idle[False]) == 1  # noqa: SLF001 (the pool is the behaviour under test)

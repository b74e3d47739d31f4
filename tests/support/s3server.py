"""A real S3-compatible server for the media tests: moto's standalone server, in its own process,
with credentials enforced (a wrong secret gets SignatureDoesNotMatch, as from AWS).

`.ci/run` starts it and sets COMET_TEST_S3_ENDPOINT (e.g. http://127.0.0.1:54330) and
COMET_TEST_S3_CTL (a command taking `stop` or `start`, for the restart test). Without them (a
laptop) the tests start one themselves, the same way. Either way the first test to use it, and
every restart, makes a user with an access key, a policy allowing S3, and the bucket: moto keeps
everything in memory, and enforces credentials after the first AUTH_FREE_ACTIONS requests. Its
random numbers are seeded first, so the key is the same after a restart."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import requests

ENDPOINT_VARIABLE = "COMET_TEST_S3_ENDPOINT"
CTL_VARIABLE = "COMET_TEST_S3_CTL"
AUTH_FREE_ACTIONS = 4  # create user, access key, user policy, bucket: then every request is checked
BUCKET = "comet-test"
SEED = 4242
_SET_UP: dict[str, Credentials] = {}  # endpoint -> the credentials this process made there


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def server_environment() -> dict[str, str]:
    return {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(AUTH_FREE_ACTIONS)}


class S3Server:
    """The server the tests share: its endpoint, its bucket's credentials, stop and start."""

    def __init__(self) -> None:
        self.endpoint = os.environ.get(ENDPOINT_VARIABLE, "").strip().rstrip("/")
        ctl = os.environ.get(CTL_VARIABLE, "").strip()
        self._ctl = shlex.split(ctl) if ctl else None
        self._process: subprocess.Popen | None = None
        if not self.endpoint:  # a laptop: a server of our own, the same way .ci/run starts one
            self.endpoint = f"http://127.0.0.1:{_free_port()}"
            self.start()
        # Set up once per server in this process: if a module's fixture is built again, the
        # user exists by then.
        self.credentials = _SET_UP.get(self.endpoint) or self._set_up()

    def settings(self, prefix: str = "", **overrides: str) -> dict[str, str]:
        """The settings that point the app at this bucket (COMET_MEDIA_URL and the AWS_* names)."""
        return {"COMET_MEDIA_URL": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.credentials.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.credentials.secret_access_key, "AWS_REGION": "us-east-1",
                **overrides}

    def stop(self) -> None:
        if self._ctl:
            subprocess.run([*self._ctl, "stop"], check=True, timeout=60)
        elif self._process is not None:
            self._process.kill()
            self._process.wait(timeout=30)
            self._process = None

    def start(self) -> None:
        if self._ctl:
            subprocess.run([*self._ctl, "start"], check=True, timeout=60)
        else:
            port = int(self.endpoint.rsplit(":", 1)[1])
            self._process = subprocess.Popen(server_command(port), env=server_environment(),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(self.endpoint)

    def restart(self) -> None:
        """Stop and start again (moto forgets every object), then the same user, key and bucket."""
        self.stop()
        self.start()
        assert self._set_up() == self.credentials

    def close(self) -> None:
        if self._process is not None:
            self.stop()

    def objects(self) -> list[str]:
        """The bucket's object names (listed with the test's own client: boto3 comes with moto)."""
        client = self.client()
        names: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            names += [item["Key"] for item in page.get("Contents", [])]
        return names

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.credentials.access_key_id,
                            aws_secret_access_key=self.credentials.secret_access_key)

    def _set_up(self) -> Credentials:
        import boto3

        requests.post(f"{self.endpoint}/moto-api/seed?a={SEED}", timeout=10).raise_for_status()
        anyone = {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                  "aws_access_key_id": "AKIASETUP", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName="comet")
        key = iam.create_access_key(UserName="comet")["AccessKey"]
        iam.put_user_policy(UserName="comet", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        _SET_UP[self.endpoint] = credentials
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id=credentials.access_key_id,
                     aws_secret_access_key=credentials.secret_access_key).create_bucket(Bucket=BUCKET)
        return credentials


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(endpoint: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=2)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":  # `python tests/support/s3server.py PORT`: how .ci/run runs the server
    os.execve(sys.executable, server_command(int(sys.argv[1])), server_environment())

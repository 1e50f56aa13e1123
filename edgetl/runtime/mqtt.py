"""`edgetl run --mqtt mqtt://HOST[:PORT]/TOPIC`: each classified frame as one JSON message, QoS 1.

The message is the object a JSON line carries (sinks.result_object: label or unknown, top-k, frame,
timestamp, latency, redacted source). Home Assistant, Node-RED and most industrial stacks read it as is.

The camera never waits for the broker: the sink only appends to a bounded queue, and a publisher
thread hands messages to paho-mqtt, at most INFLIGHT unacknowledged at a time. When the broker goes
away paho reconnects with backoff (1 s doubling to 30 s) and resends what it had not had acknowledged;
new results wait in the queue, and when it is full the oldest is dropped and counted, so a long outage
costs memory bounded by --mqtt-queue and the run keeps classifying. `TOPIC/status` says `online` or
`offline` (retained; `offline` is also the broker's last will when the device vanishes).

`mqtts://` uses TLS (the system's CAs, or --mqtt-ca FILE). Credentials never come from the command line
or the unit file: EDGETL_MQTT_USERNAME and EDGETL_MQTT_PASSWORD in the environment (the service gets
them from ROOT/edgetl.env, mode 0600), or a 0600 file of `username=` and `password=` lines. No torch.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgetl.errors import BadInputError, require
from edgetl.runtime.sinks import json_line
from edgetl.runtime.stream import Result

PORTS = {"mqtt": 1883, "mqtts": 8883}
QUEUE = 1000  # results waiting for the broker, at most (then the oldest is dropped)
INFLIGHT = 20  # handed to paho and not yet acknowledged (resent by paho after a reconnect)
FLUSH_S = 5.0  # at the end of a run: how long to wait for the broker to take what is queued
USAGE = "pass --mqtt mqtt://HOST[:PORT]/TOPIC (mqtts:// for TLS), e.g. mqtt://127.0.0.1:1883/edgetl/cam1"


@dataclass(frozen=True)
class MqttTarget:
    scheme: str
    host: str
    port: int
    topic: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.topic}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt://HOST[:PORT]/TOPIC` -> MqttTarget, or one line saying what is wrong with it."""
    parts = urlsplit(str(url))
    if parts.scheme not in PORTS or not parts.hostname:
        raise BadInputError(f"--mqtt {url!r} is not an mqtt:// or mqtts:// URL with a host", USAGE)
    if parts.username is not None or parts.password is not None:
        raise BadInputError("--mqtt must not carry credentials: a command line is visible to every user in `ps`, "
                            "and the service's is in its unit file",
                            "set EDGETL_MQTT_USERNAME and EDGETL_MQTT_PASSWORD (the service: in --camera-env FILE), "
                            "or pass --mqtt-auth FILE (mode 0600)")
    try:
        port = parts.port or PORTS[parts.scheme]
    except ValueError as exc:
        raise BadInputError(f"--mqtt {url!r}: {exc}", USAGE) from exc
    topic = parts.path[1:]
    wildcard = any(c in topic for c in "+\0") or "#" in str(url) or "?" in str(url)
    if wildcard or not topic or len(topic.encode()) > 65535:
        raise BadInputError(f"--mqtt {url!r} needs one topic to publish to (no wildcards + or #, no query)", USAGE)
    return MqttTarget(parts.scheme, parts.hostname, port, topic)


def read_credentials(auth_file: str | None = None, environ=os.environ) -> tuple[str, str | None] | None:
    """(username, password) from a 0600 file of `username=`/`password=` lines, or from
    EDGETL_MQTT_USERNAME / EDGETL_MQTT_PASSWORD; None when neither gives a user name."""
    if auth_file:
        path = Path(auth_file).expanduser()
        try:
            mode, text = path.stat().st_mode, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"cannot read --mqtt-auth {path}: {exc}", "pass a readable file") from exc
        if stat.S_IMODE(mode) & 0o077:
            raise BadInputError(f"--mqtt-auth {path} is readable by other users and holds a password",
                                f"chmod 600 {path}")
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if not values.get("username"):
            raise BadInputError(f"--mqtt-auth {path} has no username= line", "write username=NAME and password=SECRET")
        return values["username"].strip(), values.get("password", "").strip() or None
    user = environ.get("EDGETL_MQTT_USERNAME")
    return (user, environ.get("EDGETL_MQTT_PASSWORD") or None) if user else None


class MqttPublisher:
    """The --mqtt sink. Call it with each Result; `report()` is its part of the run's status and summary."""

    def __init__(self, target: MqttTarget, queue_size: int = QUEUE, credentials: tuple[str, str | None] | None = None,
                 ca_file: str | None = None, on_error=None, flush_s: float = FLUSH_S):
        if queue_size < 1:
            raise BadInputError("--mqtt-queue must be at least 1")
        mqtt = require("paho.mqtt.client", "device", "publishing results to MQTT")
        self.target, self.flush_s, self.on_error = target, flush_s, on_error
        self.queue: deque[str | bytes] = deque()
        self.queue_size = queue_size
        self.inflight: set[int] = set()  # message ids paho holds until the broker acknowledges them
        self.early: set[int] = set()
        self.handing = 0  # a message between the queue and paho
        self.counts = {"published": 0, "dropped": 0}
        self.connected, self.last_error, self.closing, self.stopped = False, None, False, False
        self.wake = threading.Condition()
        self.client = self._client(mqtt, credentials, ca_file)
        self.client.connect_async(target.host, target.port, keepalive=30)
        self.client.loop_start()
        self.pump = threading.Thread(target=self._pump, daemon=True, name="edgetl-mqtt")
        self.pump.start()

    def _client(self, mqtt, credentials, ca_file):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgetl-{socket.gethostname()}-{os.getpid()}")
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(INFLIGHT)
        client.will_set(f"{self.target.topic}/status", "offline", qos=1, retain=True)
        if credentials:
            client.username_pw_set(*credentials)
        if self.target.scheme == "mqtts":
            try:
                client.tls_set(ca_certs=ca_file)
            except (OSError, ValueError) as exc:
                raise BadInputError(f"cannot set up TLS for {self.target.url}: {exc}",
                                    "check --mqtt-ca names a PEM file of CA certificates") from exc
        client.on_connect, client.on_disconnect, client.on_publish = self._connected, self._disconnected, self._acked
        client.on_connect_fail = self._unreachable
        return client

    def _problem(self, message: str) -> None:
        self.last_error = message
        if self.on_error is not None:
            self.on_error(message)

    def _connected(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._problem(f"MQTT broker {self.target.url} refused the connection: {reason}")
            return
        # paho would resend what the broker never acknowledged only after this callback, while the pump
        # already hands it newer results: take those messages back to the head of the queue instead, so
        # results reach the broker in the order they were classified.
        unacked = [m for m in client.drop_out_messages() if m.topic == self.target.topic]
        with self.wake:
            for message in reversed(unacked):
                self.inflight.discard(message.mid)
                self.queue.appendleft(message.payload)
            while len(self.queue) > self.queue_size:
                self.queue.popleft()
                self.counts["dropped"] += 1
            self.connected = True
            self.wake.notify_all()
        client.publish(f"{self.target.topic}/status", "online", qos=1, retain=True)

    def _unreachable(self, client, userdata) -> None:
        self._problem(f"cannot reach the MQTT broker {self.target.url}: retrying; results are queued")

    def _disconnected(self, client, userdata, flags, reason, properties) -> None:
        self.connected = False
        if not self.closing:
            self._problem(f"lost the MQTT broker {self.target.url} ({reason}): reconnecting; results are queued")

    def _acked(self, client, userdata, mid, reason, properties) -> None:
        with self.wake:
            if mid in self.inflight:
                self.inflight.discard(mid)
                self.counts["published"] += 1
            else:  # acknowledged before _pump recorded it
                self.early.add(mid)
            self.wake.notify_all()

    def __call__(self, result: Result) -> None:
        """Queue one message and return: the camera loop never waits for the network."""
        payload = json_line(result)
        with self.wake:
            if len(self.queue) >= self.queue_size:
                self.queue.popleft()
                self.counts["dropped"] += 1
            self.queue.append(payload)
            self.wake.notify_all()

    def _pump(self) -> None:
        """Hand queued messages to paho in order, keeping at most INFLIGHT unacknowledged. paho runs
        on_publish holding its own lock, so publish() is called without ours (no lock-order deadlock)."""
        while True:
            with self.wake:
                while not (self.stopped or (self.closing and not self.queue)
                           or (self.queue and self.connected and len(self.inflight) < INFLIGHT)):
                    self.wake.wait(0.5)  # nothing is handed to paho before it is connected (see _connected)
                if self.stopped or not self.queue:
                    return
                payload = self.queue.popleft()
                self.handing = 1
            mid = self.client.publish(self.target.topic, payload, qos=1).mid
            with self.wake:
                self.handing = 0
                if mid in self.early:
                    self.early.discard(mid)
                    self.counts["published"] += 1
                else:
                    self.inflight.add(mid)

    def report(self) -> dict:
        with self.wake:
            return {"broker": self.target.url, "connected": self.connected, **self.counts,
                    "queued": len(self.queue) + len(self.inflight) + self.handing,
                    "last_error": self.last_error}

    def close(self) -> None:
        """Give the broker up to flush_s to take what is queued, say `offline`, and disconnect."""
        deadline = time.monotonic() + self.flush_s
        with self.wake:
            self.closing = True
            self.wake.notify_all()
            while (self.queue or self.inflight or self.handing) and time.monotonic() < deadline:
                self.wake.wait(0.1)
        if self.connected:
            try:
                self.client.publish(f"{self.target.topic}/status", "offline", qos=1, retain=True).wait_for_publish(1)
            except (RuntimeError, ValueError):  # the broker went away meanwhile: its last will says offline
                pass
        self.client.disconnect()
        self.client.loop_stop()
        with self.wake:  # what is still queued stays undelivered: the pump ends
            self.stopped = True
            self.wake.notify_all()

"""`edgetl run`: classify a camera, stream, video or images with an exported model. No torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import BadInputError
from edgetl.runtime import load
from edgetl.runtime.sources import open_source
from edgetl.runtime.stream import StreamStats, run_stream


@dataclass(frozen=True)
class RunSettings:
    """Everything `edgetl run` can be asked besides the model and the source (the CLI's flags)."""

    topk: int = 3
    threads: int | None = None
    device: str | None = None
    max_frames: int | None = None
    min_confidence: float | None = None  # below it, a frame is reported unknown
    camera_size: tuple[int, int] | None = None
    camera_fps: float | None = None
    json_lines: bool = False
    save: str | None = None
    show: bool = False
    serve: int | None = None
    serve_host: str = "127.0.0.1"
    serve_token: str | None = None  # any serve_host but loopback requires one (serve.serve_token)
    serve_allowed_hosts: tuple[str, ...] = ()
    heartbeat: str | None = None  # the status file a deploy's health check reads (runtime/status.py)
    mqtt: str | None = None  # mqtt://HOST[:PORT]/TOPIC (runtime/mqtt.py)
    mqtt_queue: int | None = None
    mqtt_auth: str | None = None
    mqtt_ca: str | None = None

    def check(self) -> None:
        """Refuse bad values before the model loads or the camera opens."""
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise BadInputError(f"--min-confidence {self.min_confidence} is not a probability",
                                "pass a number from 0 to 1, e.g. 0.6")
        if self.topk < 1:
            raise BadInputError("--topk must be at least 1")
        if self.mqtt is not None:
            from edgetl.runtime.mqtt import parse_mqtt_url, read_credentials

            parse_mqtt_url(self.mqtt)
            read_credentials(self.mqtt_auth)


def _mqtt_sink(settings: RunSettings, status):
    from edgetl.runtime.mqtt import QUEUE, MqttPublisher, parse_mqtt_url, read_credentials

    publisher = MqttPublisher(parse_mqtt_url(settings.mqtt), settings.mqtt_queue or QUEUE,
                              read_credentials(settings.mqtt_auth), settings.mqtt_ca, on_error=status.problem)
    status.reporters["mqtt"] = publisher.report
    return publisher


def _sinks(settings: RunSettings, runner, stream, status, on_serving) -> list:
    """The sinks the settings ask for, the run's status first (it is the heartbeat and /status.json)."""
    from edgetl.runtime.sinks import JsonLinesSink, VideoSink, WindowSink

    sinks: list = [status]
    if settings.mqtt:
        sinks.append(_mqtt_sink(settings, status))
    if settings.json_lines:
        sinks.append(JsonLinesSink())
    if settings.save:
        sinks.append(VideoSink(settings.save, getattr(stream, "fps", None)))
    if settings.show:
        sinks.append(WindowSink())
    if settings.serve is not None:
        from edgetl.runtime.serve import LiveServer

        server = LiveServer(settings.serve, settings.serve_host, title=Path(runner.model_path).parent.name,
                            token=settings.serve_token, allowed_hosts=settings.serve_allowed_hosts, status=status)
        sinks.append(server)
        if on_serving is not None:
            on_serving(server)
    return sinks


def classify_source(model: str | Path, source: str, settings: RunSettings | None = None, on_serving=None,
                    **fields) -> dict:
    """Run `model` over `source`; returns the summary (frames, fps, latency percentiles, dropped, unknown).

    `fields` are RunSettings' (for callers that name a few). The summary's `source` is the redacted
    description, never a URL's password; with --mqtt it says what reached the broker and what was dropped.
    """
    from edgetl.runtime.status import RunStatus

    settings = dataclasses.replace(settings or RunSettings(), **fields)
    settings.check()
    runner = load(model, threads=settings.threads, device=settings.device)
    stream = open_source(source, camera_size=settings.camera_size, camera_fps=settings.camera_fps)
    stats = StreamStats()
    status = None
    sinks: list = []
    try:
        status = RunStatus(stats, runner.model_path, stream.description, settings.heartbeat, settings.min_confidence)
        sinks = _sinks(settings, runner, stream, status, on_serving)

        def deliver(result) -> None:
            for sink in sinks:
                sink(result)

        summary = run_stream(runner, stream, topk=settings.topk, max_frames=settings.max_frames, on_result=deliver,
                             min_confidence=settings.min_confidence, stats=stats)
    except Exception as exc:
        if status is not None:
            status.error(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}")
        raise
    finally:
        for sink in reversed(sinks):  # the status last: its final snapshot has the others' last counts
            sink.close()
        stream.close()
    summary.update(model=str(runner.model_path), format=runner.format, precision=runner.sidecar.precision,
                   source=stream.description, live=stream.live, saved=settings.save, threads=runner.threads,
                   min_confidence=settings.min_confidence)
    if "mqtt" in status.reporters:
        summary["mqtt"] = status.reporters["mqtt"]()
    if getattr(stream, "size", None):
        summary["frame_size"] = list(stream.size)
    return summary

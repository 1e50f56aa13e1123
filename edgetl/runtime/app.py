"""`edgetl run`: classify a camera, stream, video or images with an exported model. No torch."""

from __future__ import annotations

from pathlib import Path

from edgetl.runtime import load
from edgetl.runtime.sources import open_source
from edgetl.runtime.stream import run_stream


def classify_source(model: str | Path, source: str, topk: int = 3, threads: int | None = None,
                    device: str | None = None, json_lines: bool = False, save: str | None = None,
                    show: bool = False, serve: int | None = None, serve_host: str = "127.0.0.1",
                    max_frames: int | None = None, on_serving=None, camera_size: tuple[int, int] | None = None,
                    camera_fps: float | None = None, serve_token: str | None = None,
                    serve_allowed_hosts: tuple[str, ...] = (), heartbeat: str | None = None) -> dict:
    """Run `model` over `source`; returns the summary (frames, fps, latency percentiles, dropped).

    `serve_token` guards the live page; any `serve_host` but loopback requires one (see
    serve.serve_token). The summary's `source` is the redacted description, never the URL's password.
    `heartbeat`: a file rewritten while frames are classified (sinks.HeartbeatSink; a deploy's health check).
    """
    from edgetl.runtime.sinks import HeartbeatSink, JsonLinesSink, VideoSink, WindowSink

    runner = load(model, threads=threads, device=device)
    stream = open_source(source, camera_size=camera_size, camera_fps=camera_fps)
    sinks = []
    try:
        if json_lines:
            sinks.append(JsonLinesSink())
        if heartbeat:
            sinks.append(HeartbeatSink(heartbeat, runner.model_path))
        if save:
            sinks.append(VideoSink(save, getattr(stream, "fps", None)))
        if show:
            sinks.append(WindowSink())
        if serve is not None:
            from edgetl.runtime.serve import LiveServer

            server = LiveServer(serve, serve_host, title=Path(runner.model_path).parent.name, token=serve_token,
                                allowed_hosts=serve_allowed_hosts)
            sinks.append(server)
            if on_serving is not None:
                on_serving(server)

        def deliver(result) -> None:
            for sink in sinks:
                sink(result)

        summary = run_stream(runner, stream, topk=topk, max_frames=max_frames, on_result=deliver)
    finally:
        for sink in sinks:
            sink.close()
        stream.close()
    summary.update(model=str(runner.model_path), format=runner.format, precision=runner.sidecar.precision,
                   source=stream.description, live=stream.live, saved=save, threads=runner.threads)
    if getattr(stream, "size", None):
        summary["frame_size"] = list(stream.size)
    return summary

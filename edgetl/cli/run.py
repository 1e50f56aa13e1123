"""`edgetl run`: the device runtime on a camera, stream, video or images (no torch)."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, table, threads_option


@click.command(short_help="Classify a camera, stream, video or images with an exported model (no torch).")
@click.argument("model", type=click.Path())
@click.option("--source", required=True, envvar="EDGETL_SOURCE", show_envvar=True,
              help="Camera index (0) or /dev/videoN (V4L2: USB webcams), picamera2 or picamera2:N (a Raspberry Pi "
                   "Camera Module through the system's Picamera2), video file, rtsp:// or http:// stream, image "
                   "file or folder of images. A stream URL with credentials is better in EDGETL_SOURCE: a command line is "
                   "visible to every user in `ps`, a process's environment only to its owner and root.")
@click.option("--topk", type=int, default=3, show_default=True, help="Classes shown per frame, best first.")
@threads_option()
@click.option("--device", help="Execution device: cpu, cuda, tensorrt (ONNX); CPU, GPU, NPU (OpenVINO).")
@click.option("--show", is_flag=True, help="Show the annotated frames in a window.")
@click.option("--save", type=click.Path(dir_okay=False), help="Write the annotated frames to a video (.mp4).")
@click.option("--serve", type=int, help="Serve a live page (MJPEG + predictions) on this port.")
@click.option("--serve-host", default="127.0.0.1", show_default=True,
              help="Address the live page listens on. Any other than loopback (e.g. 0.0.0.0) needs the page's "
                   "token: viewers without it get 403.")
@click.option("--serve-token-file", type=click.Path(dir_okay=False),
              help="The live page's token, kept on the device (created with mode 0600 if missing). Default for a "
                   "non-loopback --serve-host: $XDG_CONFIG_HOME/edgetl/serve-token (~/.config/edgetl/serve-token).")
@click.option("--serve-allowed-host", "serve_allowed_hosts", multiple=True, metavar="NAME",
              help="Another name viewers use for this device (Host header), e.g. pi.lan; IP addresses, localhost "
                   "and this machine's hostname are always accepted. Repeatable.")
@click.option("--max-frames", type=int, help="Stop after this many frames.")
@click.option("--camera-size", metavar="WxH", help="Ask the camera for this capture size, e.g. 640x480 "
                                                     "(fewer pixels: less decoding and resizing per frame).")
@click.option("--camera-fps", type=float, help="Ask the camera for this frame rate.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), envvar="EDGETL_MIN_CONFIDENCE",
              help="Report a frame as unknown (label null, unknown true) when its top-1 probability is below this, "
                   "e.g. 0.6; choose it from `edgetl parity`'s coverage table on the validation split.")
@click.option("--heartbeat", type=click.Path(dir_okay=False), help="Rewrite this JSON status file (frames, FPS, "
              "latency, last error, uptime, release) about once a second: what a deploy's health check and "
              "`edgetl status` read. The live page serves the same object as /status.json.")
@click.option("--mqtt", metavar="URL", envvar="EDGETL_MQTT", help="Publish each result as JSON to "
              "mqtt://HOST[:PORT]/TOPIC (mqtts:// for TLS), QoS 1. Credentials: EDGETL_MQTT_USERNAME and "
              "EDGETL_MQTT_PASSWORD, or --mqtt-auth.")
@click.option("--mqtt-queue", type=click.IntRange(1), help="Results kept for the broker while it is away; then the "
              "oldest is dropped and counted.  [default: 1000]")
@click.option("--mqtt-auth", type=click.Path(dir_okay=False), envvar="EDGETL_MQTT_AUTH",
              help="A file (mode 0600) of username= and password= lines for the broker.")
@click.option("--mqtt-ca", type=click.Path(dir_okay=False), envvar="EDGETL_MQTT_CA",
              help="CA certificates (PEM) for an mqtts:// broker; default: the system's.")
@json_option(lines=True)
def run(model, source, topk, threads, device, json_lines, show, save, serve, serve_host, serve_token_file,
        serve_allowed_hosts, max_frames, camera_size, camera_fps, min_confidence, heartbeat, mqtt, mqtt_queue,
        mqtt_auth, mqtt_ca):
    """Classify what SOURCE shows with MODEL (an exported file or artifact folder).

    Capture, preprocessing and inference overlap; live sources drop stale frames, files never do.
    The live page (--serve) shows the camera: off loopback it needs a token, printed with its URL.
    """
    from edgetl.console import info, say, warn
    from edgetl.runtime.app import RunSettings, classify_source
    from edgetl.runtime.sources import parse_size

    token = token_path = None
    if serve is not None:  # before loading the model: a bad token file is one line, at once
        from edgetl.runtime.serve import serve_token

        token, token_path = serve_token(serve_host, serve_token_file)

    def serving(server) -> None:
        first, *others = server.urls()
        info(f"live page on {first} (Ctrl-C to stop)")
        for url in others:
            info(f"          or {url}")
        if token_path is not None:
            info(f"live page token kept in {token_path}")

    settings = RunSettings(topk=topk, threads=threads, device=device, max_frames=max_frames,
                           min_confidence=min_confidence, camera_size=parse_size(camera_size) if camera_size else None,
                           camera_fps=camera_fps, json_lines=json_lines, save=save, show=show, serve=serve,
                           serve_host=serve_host, serve_token=token, serve_allowed_hosts=tuple(serve_allowed_hosts),
                           heartbeat=heartbeat, mqtt=mqtt, mqtt_queue=mqtt_queue, mqtt_auth=mqtt_auth, mqtt_ca=mqtt_ca)
    summary = classify_source(model, source, settings, on_serving=serving)
    if not json_lines:  # with --json-lines the summary is the last line, written by json_option
        infer = summary.get("infer_ms", {})
        table(f"run: {summary['source']}", ["frames", "FPS", "model FPS", "infer p50 ms", "infer p99 ms", "dropped",
                                            "unknown"],
              [[summary["frames"], summary["fps"], summary.get("model_fps"), infer.get("p50_ms"), infer.get("p99_ms"),
                summary["dropped"], summary["unknown"] if min_confidence is not None else "-"]])
        say(f"model {summary['model']} ({summary['format']} {summary['precision']})")
        if "mqtt" in summary:
            sent = summary["mqtt"]
            say(f"mqtt {sent['broker']}: {sent['published']} published, {sent['dropped']} dropped")
    if summary.get("mqtt", {}).get("queued"):
        warn(f"{summary['mqtt']['queued']} results were not delivered to {summary['mqtt']['broker']} before the run "
             "ended (the broker did not take them)")
    return {"summary": summary}

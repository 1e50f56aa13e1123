"""Device profiles: shipped files parse, errors name the field, a new device is a YAML file."""

from __future__ import annotations

import textwrap

import pytest

from conftest import json_out, run_cli
from edgetl.deploy.profiles import get_profile, list_profiles
from edgetl.errors import BadInputError, UnknownNameError

SHIPPED = {"rpi4", "rpi5", "jetson-orin-nano", "intel-cpu", "intel-igpu", "linux-x86", "linux-aarch64"}


def test_shipped_profiles_parse_and_say_what_they_run():
    assert SHIPPED <= set(list_profiles())
    rpi5 = get_profile("rpi5")
    assert (rpi5.arch, rpi5.python, rpi5.threads) == ("aarch64", "3.11", 4)
    assert (rpi5.preferred.format, rpi5.preferred.precision) == ("tflite", "int8")
    assert all("aarch64" in tag for tag in rpi5.platform_tags)
    assert {"manylinux_2_36_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64"} <= set(rpi5.platform_tags)
    jetson = get_profile("jetson-orin-nano")
    assert jetson.python == "3.10" and jetson.execution_device == "tensorrt" and "trtexec" in jetson.tensorrt["build"]
    assert [t.precision for t in jetson.targets] == ["int8", "fp16", "fp32"]
    assert get_profile("intel-igpu").execution_device == "GPU"


def test_a_new_device_is_a_yaml_file_and_errors_name_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(tmp_path))
    good = (tmp_path / "my-board.yaml")
    text = open(get_profile("linux-aarch64").source_file).read().replace("name: linux-aarch64", "name: my-board")
    good.write_text(text)
    assert get_profile("my-board").arch == "aarch64"
    (tmp_path / "bad-board.yaml").write_text(text.replace("name: my-board", "name: bad-board")
                                             .replace("precision: int8\nfallbacks", "precision: int4\nfallbacks"))
    with pytest.raises(BadInputError) as info:
        get_profile("bad-board")
    assert "bad-board.yaml" in info.value.message and "precision" in info.value.message
    (tmp_path / "arm-tags.yaml").write_text(textwrap.dedent("""
        name: arm-tags
        arch: aarch64
        python: "3.11"
        glibc: "2.36"
        platform_tags: [manylinux2014_x86_64]
        format: tflite
        precision: int8
        runtime: {package: ai-edge-litert}
        install_path: /opt/edgetl
    """))
    with pytest.raises(BadInputError, match="platform_tags"):
        get_profile("arm-tags")
    (tmp_path / "odd-camera.yaml").write_text(text.replace("name: my-board", "name: odd-camera").replace(
        'camera: {pipeline: v4l2, source: "0"}', 'camera: {pipeline: v4l2, source: "0", width: 640, height: "480p"}'))
    with pytest.raises(BadInputError, match="camera.height"):
        get_profile("odd-camera")
    with pytest.raises(UnknownNameError) as unknown:
        get_profile("rpi6")
    assert "rpi5" in unknown.value.hint


def test_devices_cli_lists_and_shows_as_json():
    listed = json_out(run_cli("devices", "list", "--json", check=True))
    assert SHIPPED <= {d["name"] for d in listed["devices"]}
    shown = json_out(run_cli("devices", "show", "rpi5", "--json", check=True))
    assert shown["targets"][0] == {"format": "tflite", "precision": "int8"}
    missing = run_cli("devices", "show", "nope")
    assert missing.returncode == 2 and "unknown device profile" in missing.stderr


def test_an_engine_cache_outside_the_model_folder_is_refused(tmp_path, monkeypatch):
    """`engine_cache: ../..` would put the engine, and what TensorRT reads back, anywhere on the device."""
    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(tmp_path))
    text = open(get_profile("jetson-orin-nano").source_file).read()
    for name, cache in (("up-board", "../.."), ("abs-board", "/etc"), ("dot-board", ".")):
        (tmp_path / f"{name}.yaml").write_text(text.replace("name: jetson-orin-nano", f"name: {name}")
                                               .replace("engine_cache: trt_cache", f"engine_cache: {cache}"))
        with pytest.raises(BadInputError, match="tensorrt.engine_cache"):
            get_profile(name)


def test_wheel_constraints_are_version_limits_and_nothing_else(tmp_path, monkeypatch):
    """The Pi profiles keep the bundle's numpy on 1.x (the system's Picamera2 extensions are built for it); the
    list becomes a pip constraints file, so an option line (`--index-url ...`) or a bare name is refused."""
    assert get_profile("rpi5").wheel_constraints == ("numpy<2", "opencv-python-headless<4.12")
    assert get_profile("rpi4").to_dict()["wheel_constraints"] == ["numpy<2", "opencv-python-headless<4.12"]
    assert get_profile("linux-x86").wheel_constraints == ()
    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(tmp_path))
    text = open(get_profile("linux-aarch64").source_file).read()
    for number, value in enumerate(('["--index-url http://example.invalid/simple"]', '["numpy"]', '"numpy<2"',
                                    '["numpy<2\\n-e ."]', '[2]')):
        name = f"constrained-{number}"
        (tmp_path / f"{name}.yaml").write_text(text.replace("name: linux-aarch64", f"name: {name}")
                                               + f"wheel_constraints: {value}\n")
        with pytest.raises(BadInputError, match="wheel_constraints"):
            get_profile(name)
    (tmp_path / "fine.yaml").write_text(text.replace("name: linux-aarch64", "name: fine")
                                        + 'wheel_constraints: ["numpy >= 1.24, <2"]\n')
    assert get_profile("fine").wheel_constraints == ("numpy >= 1.24, <2",)


def test_a_profile_can_make_the_service_publish_and_say_unknown(tmp_path, monkeypatch):
    """`results:` becomes the service's --min-confidence and --mqtt; a broker URL with credentials (they would
    sit in the bundle and the world-readable unit) and a threshold that is no probability are refused."""
    from edgetl.deploy.service import service_unit

    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(tmp_path))
    text = open(get_profile("rpi5").source_file).read()
    (tmp_path / "shop.yaml").write_text(text.replace("name: rpi5", "name: shop")
                                        + "results: {min_confidence: 0.6, mqtt: 'mqtt://broker.lan:1883/shop/cam1'}\n")
    unit = service_unit(get_profile("shop").to_dict(), "/opt/edgetl")
    assert '"--min-confidence" "0.6" "--mqtt" "mqtt://broker.lan:1883/shop/cam1"' in unit
    assert '"--min-confidence"' not in service_unit(get_profile("rpi5").to_dict(), "/opt/edgetl")
    for number, value in enumerate(("{mqtt: 'mqtt://u:p@broker.lan/shop'}", "{min_confidence: 1.5}",
                                    "{min_confidence: true}", "{mqtt: 'mqtt://broker.lan/#'}", "{topic: x}", "[1]")):
        name = f"bad-results-{number}"
        (tmp_path / f"{name}.yaml").write_text(text.replace("name: rpi5", f"name: {name}") + f"results: {value}\n")
        with pytest.raises(BadInputError, match="results"):
            get_profile(name)

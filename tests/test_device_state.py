"""The device state around a bench (issue 15, item 1): parsers on recorded outputs, real files, real commands.

The Raspberry Pi 5 and Jetson Orin trees below are written file by file into tmp_path in the
layout and units the kernel uses (cpufreq kHz, thermal millidegrees, devfreq Hz, a NUL-terminated
device-tree model, per-core cpufreq links to a shared policy). vcgencmd and nvpmodel are real
executables on PATH printing what the real tools print, so the subprocess path runs as on a device.
This machine's own /proc and /sys are read for real. `edgetl bench` runs in a subprocess on a real
ONNX graph.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from edgetl.bench.device_state import (compare_states, parse_nvpmodel, parse_tegrastats, parse_throttled,
                                       read_state)
from edgetl.errors import BadInputError

# /proc/cpuinfo of a Raspberry Pi 5 (github.com/hrw/arm-socs-table/issues/96 and
# github.com/raspberrypi/bookworm-feedback/issues/129): no "model name"; "Hardware" is BCM2835 on every Pi.
PI5_CORE = ("BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
            "cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
            "CPU part\t: 0xd0b\nCPU revision\t: 1\n")
PI5_CPUINFO = "".join(f"processor\t: {i}\n{PI5_CORE}\n" for i in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: d04170\nSerial\t\t: 48343bbbe3ae743b\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
# Orin: six Cortex-A78AE (CPU part 0xd42), the board named only by its device tree.
ORIN_CORE = ("BogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
             "asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd42\nCPU revision\t: 1\n")
ORIN_CPUINFO = "".join(f"processor\t: {i}\n{ORIN_CORE}\n" for i in range(6))

# `vcgencmd get_throttled` (bits: raspberrypi.com/documentation/computers/os.html#get_throttled):
# 0x0 all well; 0x50005 under-voltage and throttled now and since boot (forum.libreelec.tv thread 17860,
# ephestione.it); 0x50000 both happened since boot, nothing now; 0x80008 soft temperature limit now and since boot.
THROTTLED_OK, THROTTLED_BAD, THROTTLED_PAST, THROTTLED_HOT = (
    "throttled=0x0", "throttled=0x50005", "throttled=0x50000", "throttled=0x80008")
# `nvpmodel -q`: github.com/rbonghi/jetson_stats tests/nvpmodel (with its NVPM WARN line);
# an Orin Nano Super on JetPack 6.2 (github.com/xulei-leon/particleML, Jetson debugging guide).
NVPMODEL_MAXN = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
NVPMODEL_25W = "NV Power Mode: 25W\n1\n"
NVPMODEL_VERBOSE = ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: parsing done for /etc/nvpmodel.conf\n"
                    "NVPM VERB: Current mode: NV Power Mode: 25W\n1\n"
                    "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH /sys/devices/system/cpu/cpu0/online: REAL_VAL: 1\n")
# tegrastats: AGX Xavier and Nano lines from github.com/rbonghi/jetson_stats tests/tegrastats; an Orin Nano
# line (JetPack 6: timestamp, two cores off, GR3D without a clock, one rail missing its mW) and an AGX
# Orin line (JetPack 6.2, two GPCs, a powered-off sensor) as public parsers record them.
TEGRA_XAVIER = ("RAM 4722/7844MB (lfb 1x512kB) CPU [55%@2035,14%@2034,27%@2034,55%@2035,47%@2035,45%@2035] "
                "SWAP 149/1024MB (cached 7MB) EMC_FREQ 2%@1866 GR3D_FREQ 37%@1300 APE 150 MTS fg 0% bg 0% "
                "BCPU@-45C MCPU@-45C GPU@-51C PLL@45C AO@47.5C Tboard@37C Tdiode@46.75C PMIC@100C thermal@46.4C "
                "VDD_IN 14025/14416 VDD_CPU 2209/2538 VDD_GPU 6854/6903 VDD_SOC 1371/1370 VDD_WIFI 19/19 "
                "NVENC 716 NVDEC 716 VDD_DDR 2702/2702")
TEGRA_NANO = ("RAM 1180/3965MB (lfb 1x2MB) SWAP 149/1024MB (cached 7MB) IRAM 0/252kB(lfb 252kB) "
              "CPU [30%@1036,33%@1036,28%@1036,26%@1036] EMC_FREQ 10%@1600 GR3D_FREQ 0%@76 NVENC 716 NVDEC 716 "
              "APE 25 PLL@57C CPU@60.5C PMIC@100C GPU@59C AO@65C thermal@59.75C POM_5V_IN 4520/4680 "
              "POM_5V_GPU 0/0 POM_5V_CPU 1078/1205")
TEGRA_ORIN_NANO = ("12-23-2024 22:54:11 RAM 3162/7620MB (lfb 4x2MB) SWAP 0/3810MB (cached 0MB) "
                   "CPU [1%@729,0%@729,0%@729,0%@729,off,off] GR3D_FREQ 1% cpu@62.843C soc2@61.968C "
                   "soc0@60.625C gpu@61.687C tj@62.843C soc1@61.687C VDD_IN 3913mW/3922mW "
                   "VDD_CPU_GPU_CV 598mW/598 VDD_SOC 1238mW/1237mW")
TEGRA_AGX_ORIN = ("04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) "
                  "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
                  "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C "
                  "SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C "
                  "VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _policy(root: Path, policy: str, cpus: range, governor: str, cur_khz: int, max_khz: int,
            limit_khz: int | None = None) -> None:
    """One cpufreq policy shared by `cpus`, each cpuN/cpufreq a link to it, as the kernel lays it out."""
    base = root / "sys/devices/system/cpu"
    _write(base / "cpufreq" / policy, {"scaling_governor": f"{governor}\n", "scaling_cur_freq": f"{cur_khz}\n",
                                       "cpuinfo_max_freq": f"{max_khz}\n",
                                       "scaling_max_freq": f"{limit_khz or max_khz}\n"})
    for cpu in cpus:
        (base / f"cpu{cpu}").mkdir(parents=True, exist_ok=True)
        link = base / f"cpu{cpu}" / "cpufreq"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(Path("..") / "cpufreq" / policy)


def _pi5(root: Path, governor: str = "performance", cur_khz: int = 2400000, temp: int = 51850) -> Path:
    _write(root, {"proc/cpuinfo": PI5_CPUINFO,
                  "proc/meminfo": "MemTotal:        8245632 kB\nMemFree:         7012344 kB\n"
                                  "MemAvailable:    7526720 kB\nBuffers:           41216 kB\n",
                  "proc/loadavg": "0.52 0.31 0.12 1/245 1234\n",
                  "sys/devices/system/cpu/online": "0-3\n",
                  "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
                  "sys/class/thermal/thermal_zone0/temp": f"{temp}\n",
                  "sys/firmware/devicetree/base/model": "Raspberry Pi 5 Model B Rev 1.0\x00"})
    _policy(root, "policy0", range(4), governor, cur_khz, 2400000)
    return root


def _orin(root: Path) -> Path:
    zones = {"cpu-thermal": 47468, "gpu-thermal": 46937, "cv0-thermal": -256000, "soc0-thermal": 46687,
             "tj-thermal": 47468}
    files = {"proc/cpuinfo": ORIN_CPUINFO, "proc/meminfo": "MemTotal:        7802136 kB\nMemAvailable:    5961472 kB\n",
             "proc/loadavg": "1.08 0.87 0.66 2/512 4242\n",
             "sys/firmware/devicetree/base/model": "NVIDIA Jetson Orin Nano Developer Kit\x00",
             "sys/class/devfreq/17000000.gpu/cur_freq": "306000000\n",
             "sys/class/devfreq/17000000.gpu/max_freq": "624750000\n",
             "sys/class/devfreq/17000000.gpu/min_freq": "306000000\n",
             "sys/class/devfreq/17000000.gpu/governor": "nvhost_podgov\n"}
    for index, (kind, millidegrees) in enumerate(zones.items()):
        files[f"sys/class/thermal/thermal_zone{index}/type"] = kind + "\n"
        files[f"sys/class/thermal/thermal_zone{index}/temp"] = f"{millidegrees}\n"
    _write(root, files)
    # A 15 W mode: the A78AE clusters capped at 1510 MHz below the 1728 MHz the hardware can do.
    _policy(root, "policy0", range(4), "schedutil", 1510400, 1728000, 1510400)
    _policy(root, "policy4", range(4, 6), "schedutil", 1510400, 1728000, 1510400)
    return root


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """A folder on PATH where tests put real executables named like the device tools."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")

    def install(name: str, body: str) -> Path:
        path = folder / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    return install


def _printing(text: str) -> str:
    """A script body that prints `text` verbatim, whatever the arguments."""
    return f"cat <<'EOF'\n{text.rstrip(chr(10))}\nEOF\n"


# -- parsers on recorded outputs ------------------------------------------------------------------

@pytest.mark.parametrize("text, now, since_boot", [
    (THROTTLED_OK, [], []),
    (THROTTLED_BAD, ["under-voltage", "throttled"], ["under-voltage", "throttled"]),
    (THROTTLED_PAST, [], ["under-voltage", "throttled"]),
    (THROTTLED_HOT, ["soft temperature limit"], ["soft temperature limit"]),
    ("throttled=0xf000f", ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"],
     ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"]),
    ("throttled=0x20002\n", ["arm frequency capped"], ["arm frequency capped"]),
])
def test_vcgencmd_get_throttled_decodes_every_documented_bit(text, now, since_boot):
    decoded = parse_throttled(text)
    assert decoded["now"] == now and decoded["since_boot"] == since_boot
    assert decoded["raw"] == text.strip().split("=")[1]


def test_unparseable_tool_output_is_one_line_error():
    with pytest.raises(BadInputError, match="not vcgencmd get_throttled output"):
        parse_throttled("VCHI initialization failed")
    with pytest.raises(BadInputError, match="not nvpmodel -q output"):
        parse_nvpmodel("NVPM ERROR: failed to read PARAM")
    with pytest.raises(BadInputError, match="not a tegrastats line"):
        parse_tegrastats("hello")


@pytest.mark.parametrize("text, name, mode", [(NVPMODEL_MAXN, "MAXN", 0), (NVPMODEL_25W, "25W", 1),
                                              (NVPMODEL_VERBOSE, "25W", 1)])
def test_nvpmodel_query_gives_mode_name_and_id(text, name, mode):
    assert parse_nvpmodel(text) == {"available": True, "name": name, "id": mode}


def test_tegrastats_lines_of_four_jetsons():
    xavier = parse_tegrastats(TEGRA_XAVIER)
    assert xavier["ram_mb"] == {"used": 4722, "total": 7844} and xavier["swap_mb"] == {"used": 149, "total": 1024}
    assert [c["mhz"] for c in xavier["cpu"]] == [2035, 2034, 2034, 2035, 2035, 2035]
    assert xavier["cpu"][0]["load_percent"] == 55
    assert xavier["gpu"] == {"load_percent": 37, "mhz": [1300]} and xavier["emc"] == {"load_percent": 2, "mhz": [1866]}
    assert xavier["temperatures_c"]["AO"] == 47.5 and xavier["temperatures_c"]["BCPU"] == -45.0
    assert xavier["power_mw"]["VDD_IN"] == {"now": 14025, "avg": 14416} and "RAM" not in xavier["power_mw"]

    nano = parse_tegrastats(TEGRA_NANO)
    assert nano["gpu"] == {"load_percent": 0, "mhz": [76]} and nano["temperatures_c"]["CPU"] == 60.5
    assert nano["power_mw"]["POM_5V_IN"] == {"now": 4520, "avg": 4680} and "IRAM" not in nano["power_mw"]

    orin_nano = parse_tegrastats(TEGRA_ORIN_NANO)
    assert orin_nano["time"] == "12-23-2024 22:54:11"
    assert [c.get("off", False) for c in orin_nano["cpu"]] == [False] * 4 + [True] * 2
    assert orin_nano["cpu"][0] == {"load_percent": 1, "mhz": 729}
    assert orin_nano["gpu"] == {"load_percent": 1, "mhz": []}
    assert orin_nano["temperatures_c"]["tj"] == 62.843
    assert orin_nano["power_mw"]["VDD_CPU_GPU_CV"] == {"now": 598, "avg": 598}

    agx = parse_tegrastats(TEGRA_AGX_ORIN)
    assert len(agx["cpu"]) == 12 and agx["gpu"] == {"load_percent": 0, "mhz": [0, 0]}
    assert "CV0" not in agx["temperatures_c"] and "GPU" not in agx["temperatures_c"]  # -256 C: powered off
    assert agx["temperatures_c"]["tj"] == 44.343 and agx["power_mw"]["VIN_SYS_5V0"]["now"] == 4025


def test_old_tegrastats_cpu_format_shares_one_clock():
    line = "RAM 3468/3983MB (lfb 48x4MB) SWAP 873/8192MB (cached 295MB) CPU [17%,13%,off,5%]@1734 EMC_FREQ 1%@1600"
    cores = parse_tegrastats(line)["cpu"]
    assert [c["mhz"] for c in cores] == [1734, 1734, None, 1734] and cores[2]["off"]


# -- recorded trees ------------------------------------------------------------------------------

def test_raspberry_pi_5_tree_and_real_vcgencmd(tmp_path, tools):
    tools("vcgencmd", '[ "$1" = get_throttled ] || { echo "unknown command" >&2; exit 255; }\n'
                      + _printing(THROTTLED_BAD))
    state = read_state(_pi5(tmp_path / "pi5", governor="ondemand", cur_khz=1500000))
    assert state["cpu"] == {"available": True, "model": "Raspberry Pi 5 Model B Rev 1.0", "cores": 4,
                            "core": "Cortex-A76"}
    assert state["memory"] == {"available": True, "total_mb": 8052.4, "available_mb": 7350.3}
    assert state["load"] == {"available": True, "1m": 0.52, "5m": 0.31, "15m": 0.12}
    assert state["cpufreq"]["cores"] == {f"cpu{i}": {"governor": "ondemand", "cur_mhz": 1500.0, "max_mhz": 2400.0,
                                                     "limit_mhz": 2400.0} for i in range(4)}
    assert state["thermal"]["zones"] == {"thermal_zone0": {"type": "cpu-thermal", "celsius": 51.85}}
    assert state["throttling"] == {"available": True, "raw": "0x50005", "now": ["under-voltage", "throttled"],
                                   "since_boot": ["under-voltage", "throttled"]}
    assert not state["devfreq"]["available"] and "/sys/class/devfreq" in state["devfreq"]["reason"]
    assert not state["power_mode"]["available"] and "no nvpmodel on PATH" in state["power_mode"]["reason"]


def test_jetson_orin_tree_and_real_nvpmodel(tmp_path, tools):
    tools("nvpmodel", '[ "$1" = -q ] || exit 1\n' + _printing(NVPMODEL_25W))
    state = read_state(_orin(tmp_path / "orin"))
    assert state["cpu"] == {"available": True, "model": "NVIDIA Jetson Orin Nano Developer Kit", "cores": 6,
                            "core": "Cortex-A78AE"}
    assert state["power_mode"] == {"available": True, "name": "25W", "id": 1}
    assert sorted(state["cpufreq"]["cores"]) == [f"cpu{i}" for i in range(6)]
    assert state["cpufreq"]["cores"]["cpu5"] == {"governor": "schedutil", "cur_mhz": 1510.4, "max_mhz": 1728.0,
                                                 "limit_mhz": 1510.4}
    zones = state["thermal"]["zones"]
    assert zones["thermal_zone4"] == {"type": "tj-thermal", "celsius": 47.468}
    assert "celsius" not in zones["thermal_zone2"] and "powered off" in zones["thermal_zone2"]["reason"]
    assert state["devfreq"]["devices"] == {"17000000.gpu": {"governor": "nvhost_podgov", "cur_mhz": 306.0,
                                                            "max_mhz": 624.8, "min_mhz": 306.0}}
    assert "no vcgencmd on PATH" in state["throttling"]["reason"]
    warnings = compare_states(state, state)
    assert any("'schedutil' on cpu0, cpu1, cpu2, cpu3, cpu4, cpu5" in w for w in warnings)
    assert any("scaling_max_freq caps" in w and "nvpmodel -m 0" in w for w in warnings)


def test_offline_core_and_missing_sources(tmp_path):
    root = _pi5(tmp_path / "pi")
    _write(root, {"sys/devices/system/cpu/cpu3/online": "0\n"})
    (root / "sys/devices/system/cpu/cpu3/cpufreq").unlink()
    shutil.rmtree(root / "sys/class/thermal")
    state = read_state(root)
    assert state["cpufreq"]["cores"]["cpu3"] == {"online": False}
    assert state["thermal"] == {"available": False, "reason": "no /sys/class/thermal/thermal_zone* (no temperature "
                                                              "sensors exposed here, typical in containers/VMs)"}
    empty = read_state(tmp_path / "nothing")
    for block in ("cpu", "memory", "load", "cpufreq", "thermal", "devfreq"):
        assert empty[block]["available"] is False and empty[block]["reason"], block
    assert compare_states(empty, empty) == []


def test_tool_that_fails_hangs_or_prints_nonsense_is_unavailable(tmp_path, tools):
    tools("vcgencmd", 'echo "VCHI initialization failed" >&2\nexit 255\n')
    reason = read_state(tmp_path)["throttling"]["reason"]
    assert "exited with 255" in reason and "VCHI initialization failed" in reason
    tools("vcgencmd", "sleep 5\n")
    assert "did not answer within 0.5 s" in read_state(tmp_path, timeout=0.5)["throttling"]["reason"]
    tools("nvpmodel", "echo 'NVPM ERROR: failed to read PARAM'\n")
    assert "not nvpmodel -q output" in read_state(tmp_path)["power_mode"]["reason"]


def test_this_machine(tmp_path):
    """This machine's real /proc and /sys: cores and memory are read; what the kernel lacks says so."""
    state = read_state(Path("/"))
    assert state["cpu"]["cores"] == len([line for line in Path("/proc/cpuinfo").read_text().splitlines()
                                         if line.startswith("processor")])
    assert state["memory"]["total_mb"] > 0 and state["load"]["available"]
    has_cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq").is_dir()
    assert state["cpufreq"]["available"] is has_cpufreq
    if not has_cpufreq:
        assert "no /sys/devices/system/cpu/cpu0/cpufreq" in state["cpufreq"]["reason"]
    assert state["thermal"]["available"] is bool(list(Path("/sys/class/thermal").glob("thermal_zone*")))
    if shutil.which("vcgencmd") is None:
        assert state["throttling"]["available"] is False and "vcgencmd" in state["throttling"]["reason"]
    json.dumps(state)  # the report is JSON as it stands


# -- warnings ------------------------------------------------------------------------------------

def test_no_warnings_when_nothing_changed(tmp_path, tools):
    tools("vcgencmd", _printing(THROTTLED_PAST))  # throttled before this run began: not this run's doing
    state = read_state(_pi5(tmp_path / "pi5"))
    assert compare_states(state, read_state(tmp_path / "pi5")) == []


def test_frequency_drop_throttle_and_heat_are_warned(tmp_path, tools):
    tools("vcgencmd", _printing(THROTTLED_OK))
    before = read_state(_pi5(tmp_path / "pi5"))
    tools("vcgencmd", _printing(THROTTLED_BAD))
    after = read_state(_pi5(tmp_path / "pi5", cur_khz=1500000, temp=84300))
    warnings = compare_states(before, after)
    assert len(warnings) == 3, warnings
    drop, throttled, hot = warnings
    assert drop.startswith("CPU clock dropped during the run (cpu0 2400 -> 1500 MHz, cpu1 2400 -> 1500 MHz")
    assert "under-voltage, throttled now (vcgencmd get_throttled=0x50005)" in throttled and "5 A for a Pi 5" in throttled
    assert hot == ("cpu-thermal is at 84.3 °C after the run (51.85 °C before), above 80 °C: SoCs throttle in the "
                   "80s °C; add a heatsink or fan")
    assert all("\n" not in w for w in warnings)


def test_since_boot_bit_set_during_the_run(tmp_path, tools):
    tools("vcgencmd", _printing(THROTTLED_OK))
    before = read_state(_pi5(tmp_path / "pi5"))
    tools("vcgencmd", _printing("throttled=0x80000"))
    warnings = compare_states(before, read_state(tmp_path / "pi5"))
    assert warnings == ["the Pi hit soft temperature limit during the run (vcgencmd get_throttled=0x80000): some "
                        "timed runs were slowed; add a heatsink or fan, or give the board air, then bench again"]


def test_powersave_governor_and_clock_below_max(tmp_path):
    state = read_state(_pi5(tmp_path / "pi5", governor="powersave", cur_khz=1500000))
    governor, below = compare_states(state, state)
    assert governor.startswith("cpufreq governor is 'powersave' on cpu0, cpu1, cpu2, cpu3, not 'performance'")
    assert "sudo cpupower frequency-set -g performance" in governor and "scaling_governor" in governor
    assert below.startswith("CPU clock ended more than 10% below its maximum (cpu0 1500/2400 MHz")


# -- edgetl bench and the self-test on a real ONNX graph -------------------------------------------

def mean_per_channel_onnx():
    """[1,3,8,8] -> GlobalAveragePool -> Flatten -> [1,3]: a real ONNX model that loads in milliseconds."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["y"])],
        "mean_per_channel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _tiny_artifact(folder: Path) -> Path:
    """[1,3,8,8] -> GlobalAveragePool -> Flatten -> [1,3], with its edgetl sidecar."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

    from edgetl.contract.preprocess import Preprocess
    from edgetl.contract.sidecar import Sidecar, TensorInfo

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(mean_per_channel_onnx(), str(folder / "model.onnx"))
    sidecar = Sidecar(format="onnx", precision="fp32", requested_precision="fp32", model_file="model.onnx",
                      labels=["red", "green", "blue"], preprocess=Preprocess(size=(8, 8)),
                      input=TensorInfo("x", [1, 3, 8, 8], "float32"), output=TensorInfo("y", [1, 3], "float32"))
    (folder / "model.json").write_text(sidecar.to_json())
    return folder


def test_bench_json_has_device_block_and_prints_warnings(tmp_path):
    artifact = _tiny_artifact(tmp_path / "artifact")
    tools = tmp_path / "bin"
    tools.mkdir()
    # A real vcgencmd on PATH: all well on the first call (before), under-voltage on the next (after).
    script = tools / "vcgencmd"
    script.write_text('#!/bin/sh\ncalls="$(dirname "$0")/calls"\nif [ -f "$calls" ]; then echo throttled=0x50005; '
                      'else touch "$calls"; echo throttled=0x0; fi\n')
    script.chmod(0o755)
    result = run_cli("bench", str(artifact), "--runs", "3", "--json", "--plot", "", timeout=300,
                     env={"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    before, after = data["device"]["before"], data["device"]["after"]
    assert before["memory"]["total_mb"] > 0 and set(before) == set(after)
    assert before["throttling"]["raw"] == "0x0" and after["throttling"]["raw"] == "0x50005"
    assert data["models"][0]["execution_device"] == "cpu" and data["models"][0]["runs"] == 3
    assert set(data["models"][0]["device"]) == {"before", "after"}  # each entry carries its own state
    assert len(data["warnings"]) >= 1 and "under-voltage, throttled now" in data["warnings"][-1]
    assert "warning: the Pi reports under-voltage, throttled now" in result.stderr


def test_self_test_records_device_block(tmp_path):
    from edgetl.deploy.selftest import self_test

    release = tmp_path / "release"
    _tiny_artifact(release / "model")
    (release / "manifest.json").write_text(json.dumps({"bundle": "r1", "files": {},
                                                       "profile": {"threads": 1, "execution_device": "cpu"}}))
    result = self_test(release, runs=3)
    assert set(result["device"]) == {"before", "after"} and result["device"]["after"]["cpu"]["cores"] >= 1
    assert isinstance(result["warnings"], list) and result["bench"]["threads"] == 1


def _coloured_release(tmp_path: Path, parity_accuracy: float, wrong_labels: int) -> Path:
    """The tiny mean-per-channel artifact as a release with 30 held-out solid-colour photos, a golden
    sample and a parity record; `wrong_labels` photos carry a label the model cannot give them."""
    from PIL import Image

    from edgetl.contract.sidecar import GoldenSample, Sidecar

    release = tmp_path / "release"
    model = _tiny_artifact(release / "model")
    samples, labels = model / "samples", {}
    samples.mkdir()
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for number in range(30):
        name = list(colours)[number % 3]
        Image.new("RGB", (8, 8), colours[name]).save(samples / f"{number:04d}.png")
        labels[f"{number:04d}.png"] = "blue" if number < wrong_labels and name != "blue" else name
    (samples / "labels.json").write_text(json.dumps(labels))
    (model / "golden").mkdir()
    Image.new("RGB", (8, 8), colours["red"]).save(model / "golden" / "00.png")
    sidecar = Sidecar.read(model)
    sidecar.golden = [GoldenSample(file="golden/00.png", label="red", top1=0, topk=[[0, 1.0]], logits=[1, 0, 0],
                                   artifact_top1=0, artifact_logits=[1, 0, 0])]
    (model / "model.json").write_text(sidecar.to_json())
    (model / "parity.json").write_text(json.dumps({"split": "test", "images": 800, "accuracy": parity_accuracy}))
    (release / "manifest.json").write_text(json.dumps({"bundle": "r1", "files": {},
                                                       "profile": {"threads": 1, "execution_device": "cpu"}}))
    return release


def test_self_test_gates_held_out_accuracy_against_the_parity_record(tmp_path):
    """Golden samples pass in every case; the held-out photos decide, with a tolerance from their number."""
    from edgetl.deploy.selftest import self_test

    lucky = self_test(_coloured_release(tmp_path / "a", 0.9, wrong_labels=4), runs=3)  # 26/30 at 90%: chance
    assert lucky["golden"]["passed"] and lucky["passed"], lucky.get("reason")
    assert lucky["accuracy_check"]["against"] == "parity, test split"
    broken = self_test(_coloured_release(tmp_path / "b", 0.9, wrong_labels=14), runs=3)
    assert broken["golden"]["passed"] and not broken["passed"]
    assert "held-out accuracy here is 66.7% (20/30)" in broken["reason"], broken["reason"]
    exact = self_test(_coloured_release(tmp_path / "c", 1.0, wrong_labels=0), runs=3)
    assert exact["passed"] and exact["accuracy"] == 1.0

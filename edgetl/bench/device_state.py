"""The device's state around a benchmark: clocks, governor, temperatures, throttling, power mode.

A latency number means little without the state the device ran in. A Pi on the `ondemand`
governor, a Pi 5 on a weak supply (under-voltage caps the ARM clock), a Jetson in a low nvpmodel
mode or a board at 85 °C all run the same model slower, and the slowdown looks like the model's.
`edgetl bench` and the on-device self-test read this state before and after the timed runs;
`compare_states` turns what it shows into one-line warnings a person can act on.

Everything is read from files under `root` (tests point it at a recorded sysfs/procfs tree) plus
two commands where they exist: `vcgencmd get_throttled` (Raspberry Pi firmware) and `nvpmodel -q`
(Jetson). A source that is absent says so, `{"available": False, "reason": ...}`, instead of being
guessed. Commands run as argument lists, never through a shell, with a 2 s timeout. tegrastats is
not run (it prints until killed and needs root for some fields; sysfs gives the same clocks and
temperatures): `parse_tegrastats` reads a line of a `tegrastats --logfile` a person recorded.
No torch, no edgetl stage imports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgetl.errors import BadInputError

COMMAND_TIMEOUT_S = 2.0
HOT_CELSIUS = 80.0  # Pi 4/5 firmware starts soft-throttling at 80-85 °C
DROP_FRACTION = 0.05  # a core's clock falling more than this during the run
BELOW_MAX_FRACTION = 0.10  # a core ending more than this below its maximum

# `vcgencmd get_throttled`: bits 0-3 are the state now, bits 16-19 the same condition since boot
# (https://www.raspberrypi.com/documentation/computers/os.html#get_throttled).
THROTTLE_CONDITIONS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}
SINCE_BOOT_SHIFT = 16

# ARM's CPU part numbers (/proc/cpuinfo "CPU part"): arm64 kernels print no "model name".
ARM_CORES = {"0xd03": "Cortex-A53", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76",
             "0xd42": "Cortex-A78AE", "0xd05": "Cortex-A55"}

MISSING_COMMAND = {
    "vcgencmd": "not a Raspberry Pi, or its firmware tools are not installed (raspi-utils, once libraspberrypi-bin)",
    "nvpmodel": "not a Jetson, or JetPack's nvpmodel is not installed",
}


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def _read(path: Path) -> str | None:
    """A sysfs/procfs file's text, or None where it is missing or the kernel refuses to read it."""
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _mhz(text: str | None, per_mhz: float) -> float | None:
    value = _number(text)
    return round(value / per_mhz, 1) if value is not None else None


# -- files --------------------------------------------------------------------------------------

def _cpu(root: Path) -> dict:
    text = _read(root / "proc/cpuinfo")
    if text is None:
        return _unavailable("/proc/cpuinfo is unreadable")
    fields: dict[str, str] = {}
    cores = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif value:
            fields.setdefault(key, value)
    tree = _read(root / "sys/firmware/devicetree/base/model") or _read(root / "proc/device-tree/model")
    # x86 names its CPU; a Pi names its board ("Model"; "Hardware" is hard-coded BCM2835 even on a
    # Pi 5); a Jetson names neither, only its device tree does.
    board = fields.get("model") if not fields.get("model", "").isdigit() else None  # x86's "model" is a number
    model = fields.get("model name") or board or tree or fields.get("hardware") or "unknown"
    state: dict = {"available": True, "model": model, "cores": cores or _online_cores(root)}
    if fields.get("cpu implementer") == "0x41" and fields.get("cpu part") in ARM_CORES:
        state["core"] = ARM_CORES[fields["cpu part"]]
    return state


def _online_cores(root: Path) -> int:
    count = 0
    for part in (_read(root / "sys/devices/system/cpu/online") or "").split(","):
        low, _, high = part.partition("-")
        if low.strip().isdigit():
            count += int(high) - int(low) + 1 if high.strip().isdigit() else 1
    return count


def _memory(root: Path) -> dict:
    values = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            values[key] = round(int(rest.split()[0]) / 1024, 1)  # kB -> MB
    if "MemTotal" not in values:
        return _unavailable("/proc/meminfo is unreadable or has no MemTotal")
    state = {"available": True, "total_mb": values["MemTotal"]}
    if "MemAvailable" in values:
        state["available_mb"] = values["MemAvailable"]
    return state


def _load(root: Path) -> dict:
    parts = (_read(root / "proc/loadavg") or "").split()
    numbers = [_number(p) for p in parts[:3]]
    if len(numbers) < 3 or None in numbers:
        return _unavailable("/proc/loadavg is unreadable")
    return {"available": True, **dict(zip(("1m", "5m", "15m"), numbers))}


def _cpu_dirs(root: Path) -> list[Path]:
    base = root / "sys/devices/system/cpu"
    found = [p for p in base.glob("cpu[0-9]*") if p.name[3:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[3:]))


def _cpufreq(root: Path) -> dict:
    cores = {}
    for cpu in _cpu_dirs(root):
        freq = cpu / "cpufreq"
        if _read(cpu / "online") == "0":
            cores[cpu.name] = {"online": False}
        elif freq.is_dir():
            core = {"governor": _read(freq / "scaling_governor"),
                    "cur_mhz": _mhz(_read(freq / "scaling_cur_freq"), 1000),  # kHz
                    "max_mhz": _mhz(_read(freq / "cpuinfo_max_freq"), 1000),
                    "limit_mhz": _mhz(_read(freq / "scaling_max_freq"), 1000)}
            cores[cpu.name] = {k: v for k, v in core.items() if v is not None}
    if not any(c.get("online", True) for c in cores.values()):
        return _unavailable("no /sys/devices/system/cpu/cpu0/cpufreq (the kernel exposes no cpufreq here, "
                            "typical in containers/VMs)")
    return {"available": True, "cores": cores}


def _thermal(root: Path) -> dict:
    zones = {}
    base = root / "sys/class/thermal"
    numbered = [p for p in base.glob("thermal_zone*") if p.name[12:].isdigit()]
    for zone in sorted(numbered, key=lambda p: int(p.name[12:])):
        millidegrees = _number(_read(zone / "temp"))
        entry: dict = {"type": _read(zone / "type") or zone.name}
        if millidegrees is None:
            entry["reason"] = "temp is unreadable"
        elif millidegrees <= -100_000:  # Jetson reports -256 °C for a sensor whose power domain is off
            entry["reason"] = f"reads {millidegrees / 1000:g} °C: the sensor is powered off"
        else:
            entry["celsius"] = round(millidegrees / 1000, 3)
        zones[zone.name] = entry
    if not zones:
        return _unavailable("no /sys/class/thermal/thermal_zone* (no temperature sensors exposed here, "
                            "typical in containers/VMs)")
    return {"available": True, "zones": zones}


def _devfreq(root: Path) -> dict:
    """Clock-scaled devices other than the CPU; on a Jetson the GPU (17000000.gpu on JetPack 6,
    17000000.ga10b on JetPack 5 Orin, 57000000.gpu on a Nano), in Hz."""
    devices = {}
    for device in sorted((root / "sys/class/devfreq").glob("*")):
        entry = {"governor": _read(device / "governor"), "cur_mhz": _mhz(_read(device / "cur_freq"), 1e6),
                 "max_mhz": _mhz(_read(device / "max_freq"), 1e6), "min_mhz": _mhz(_read(device / "min_freq"), 1e6)}
        if entry["cur_mhz"] is not None:
            devices[device.name] = {k: v for k, v in entry.items() if v is not None}
    if not devices:
        return _unavailable("no /sys/class/devfreq devices (no GPU or memory clock scaling exposed here)")
    return {"available": True, "devices": devices}


# -- commands -----------------------------------------------------------------------------------

def _command(args: list[str], timeout: float) -> tuple[str | None, str | None]:
    """(stdout, None) when the command ran and succeeded, else (None, why not)."""
    shown = " ".join(args)
    executable = shutil.which(args[0])
    if executable is None:
        return None, f"no {args[0]} on PATH: {MISSING_COMMAND.get(args[0], 'not installed')}"
    try:
        done = subprocess.run([executable, *args[1:]], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"`{shown}` did not answer within {timeout:g} s"
    except OSError as exc:
        return None, f"`{shown}` could not run: {exc.strerror or exc}"
    if done.returncode != 0:
        last = ((done.stderr or "").strip() or (done.stdout or "").strip()).splitlines()[-1:] or ["no output"]
        return None, f"`{shown}` exited with {done.returncode}: {last[0][:200]}"
    return done.stdout, None


def parse_throttled(text: str) -> dict:
    """Decode `vcgencmd get_throttled` ("throttled=0x50005"): which conditions hold now, which since boot."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not match:
        raise BadInputError(f"not vcgencmd get_throttled output: {text.strip()[:80]!r}")
    value = int(match.group(1), 0)
    return {"available": True, "raw": hex(value),
            "now": [name for bit, name in THROTTLE_CONDITIONS.items() if value >> bit & 1],
            "since_boot": [name for bit, name in THROTTLE_CONDITIONS.items()
                           if value >> (bit + SINCE_BOOT_SHIFT) & 1]}


def parse_nvpmodel(text: str) -> dict:
    """Decode `nvpmodel -q`: "NV Power Mode: MAXN" then the mode id on the next line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "NV Power Mode:" in line:
            state: dict = {"available": True, "name": line.split("NV Power Mode:", 1)[1].strip()}
            if index + 1 < len(lines) and lines[index + 1].isdigit():
                state["id"] = int(lines[index + 1])
            return state
    raise BadInputError(f"not nvpmodel -q output: {text.strip()[:80]!r}")


def _from_command(args: list[str], parse, timeout: float) -> dict:
    out, reason = _command(args, timeout)
    if out is None:
        return _unavailable(reason)
    try:
        return parse(out)
    except BadInputError as exc:
        return _unavailable(exc.message)


def read_state(root: Path = Path("/"), timeout: float = COMMAND_TIMEOUT_S) -> dict:
    """This device's state now: CPU, memory, load, per-core cpufreq, thermal zones, devfreq clocks,
    Raspberry Pi throttling and Jetson power mode, each either read or `available: False` with why."""
    root = Path(root)
    return {"cpu": _cpu(root), "memory": _memory(root), "load": _load(root), "cpufreq": _cpufreq(root),
            "thermal": _thermal(root), "devfreq": _devfreq(root),
            "throttling": _from_command(["vcgencmd", "get_throttled"], parse_throttled, timeout),
            "power_mode": _from_command(["nvpmodel", "-q"], parse_nvpmodel, timeout)}


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line: RAM and swap (MB), per-core CPU load and MHz (None for an 'off' core),
    GR3D (GPU) and EMC load and MHz, temperatures (°C; powered-off sensors at -256 C left out) and
    power rails (mW now/average)."""
    ram = re.search(r"\bRAM (\d+)/(\d+)MB", line)
    if not ram:
        raise BadInputError(f"not a tegrastats line (no 'RAM used/totalMB'): {line.strip()[:80]!r}")
    stats: dict = {"ram_mb": {"used": int(ram.group(1)), "total": int(ram.group(2))}}
    stamp = re.match(r"\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)", line)
    if stamp:
        stats["time"] = stamp.group(1)
    swap = re.search(r"\bSWAP (\d+)/(\d+)MB", line)
    if swap:
        stats["swap_mb"] = {"used": int(swap.group(1)), "total": int(swap.group(2))}
    cpu = re.search(r"\bCPU \[([^\]]*)\](?:@(\d+))?", line)
    if cpu:
        cores = []
        for item in cpu.group(1).split(","):
            core = re.fullmatch(r"\s*(\d+)%(?:@(\d+))?\s*", item)
            if core:  # "12%@1510"; the old "CPU [12%,30%]@1734" gives every core the shared clock
                mhz = core.group(2) or cpu.group(2)
                cores.append({"load_percent": int(core.group(1)), "mhz": int(mhz) if mhz else None})
            else:
                cores.append({"load_percent": None, "mhz": None, "off": True})
        stats["cpu"] = cores
    for name, key in (("GR3D_FREQ", "gpu"), ("EMC_FREQ", "emc")):
        engine = re.search(rf"\b{name} (\d+)?%?(?:@\[?([\d,]+)\]?)?", line)
        if engine:
            stats[key] = {"load_percent": int(engine.group(1)) if engine.group(1) else None,
                          "mhz": [int(f) for f in engine.group(2).split(",")] if engine.group(2) else []}
    temperatures = {name: float(value) for name, value in re.findall(r"\b(\w+)@(-?\d+(?:\.\d+)?)C\b", line)}
    stats["temperatures_c"] = {k: v for k, v in temperatures.items() if v > -100}
    rails = re.findall(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])", line)
    stats["power_mw"] = {name: {"now": int(now), "avg": int(avg)} for name, now, avg in rails
                         if name not in ("RAM", "SWAP", "IRAM")}
    return stats


# -- warnings -----------------------------------------------------------------------------------

def _cores(state: dict) -> dict:
    cpufreq = state.get("cpufreq") or {}
    return cpufreq.get("cores", {}) if cpufreq.get("available") else {}


def _join(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _throttle_advice(conditions: list[str]) -> str:
    if "under-voltage" in conditions:
        return ("use a supply that holds 5 V at the board's rated current (5 A for a Pi 5, 3 A for a Pi 4) "
                "and a short cable")
    return "add a heatsink or fan, or give the board air"


def compare_states(before: dict, after: dict, hot_celsius: float = HOT_CELSIUS) -> list[str]:
    """One-line warnings about what the device did to these timings; none where a source is unavailable."""
    warnings: list[str] = []
    start, end = _cores(before), _cores(after)
    governors: dict[str, list[str]] = {}
    for name, core in end.items():
        if core.get("governor") and core["governor"] != "performance":
            governors.setdefault(core["governor"], []).append(name)
    for governor, names in governors.items():
        warnings.append(f"cpufreq governor is '{governor}' on {_join(names)}, not 'performance': the clock follows the "
                        "load, so latency wanders; for benchmarks run `sudo cpupower frequency-set -g performance` (or "
                        "`echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`)")
    dropped = [f"{name} {start[name]['cur_mhz']:g} -> {core['cur_mhz']:g} MHz"
               for name, core in end.items() if "cur_mhz" in core and start.get(name, {}).get("cur_mhz")
               and core["cur_mhz"] < start[name]["cur_mhz"] * (1 - DROP_FRACTION)]
    if dropped:
        warnings.append(f"CPU clock dropped during the run ({_join(dropped)}): the device throttled or the governor "
                        "scaled down; the later runs were slower than the first")
    below = [f"{name} {core['cur_mhz']:g}/{core['max_mhz']:g} MHz" for name, core in end.items()
             if core.get("cur_mhz") and core.get("max_mhz")
             and core["cur_mhz"] < core["max_mhz"] * (1 - BELOW_MAX_FRACTION)
             and not any(d.startswith(name + " ") for d in dropped)]
    capped = [name for name, core in end.items() if core.get("limit_mhz") and core.get("max_mhz")
              and core["limit_mhz"] < core["max_mhz"] * (1 - BELOW_MAX_FRACTION)]
    if below:
        why = (f"scaling_max_freq caps {_join(capped)} below the hardware maximum (a Jetson nvpmodel mode or a user "
               "limit; `sudo nvpmodel -m 0` selects MAXN on a Jetson)") if capped else \
            "throttled, or a power-saving governor let the clock fall"
        warnings.append(f"CPU clock ended more than {BELOW_MAX_FRACTION:.0%} below its maximum ({_join(below)}): {why}")
    throttle_before, throttle_after = before.get("throttling") or {}, after.get("throttling") or {}
    if throttle_after.get("available"):
        now = throttle_after["now"]
        new = [c for c in throttle_after["since_boot"] if c not in throttle_before.get("since_boot", [])] \
            if throttle_before.get("available") else []
        if now:
            warnings.append(f"the Pi reports {_join(now)} now (vcgencmd get_throttled={throttle_after['raw']}): these "
                            f"timings are slower than the board can run; {_throttle_advice(now)}, then bench again")
        elif new:
            warnings.append(f"the Pi hit {_join(new)} during the run (vcgencmd get_throttled={throttle_after['raw']}): "
                            f"some timed runs were slowed; {_throttle_advice(new)}, then bench again")
    zones_before = (before.get("thermal") or {}).get("zones", {})
    for name, zone in ((after.get("thermal") or {}).get("zones") or {}).items():
        if zone.get("celsius", -1000) > hot_celsius:
            was = zones_before.get(name, {}).get("celsius")
            warnings.append(f"{zone['type']} is at {zone['celsius']:g} °C after the run"
                            + (f" ({was:g} °C before)" if was is not None else "")
                            + f", above {hot_celsius:g} °C: SoCs throttle in the 80s °C; add a heatsink or fan")
    return warnings

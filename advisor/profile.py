"""What this machine can train with: GPU(s), memory, disk and CPU.

Detection never touches CUDA in the studio's process (no torch): NVIDIA cards are read through
NVML (``pynvml`` from nvidia-ml-py), AMD cards through the amdgpu sysfs files that rocm-smi reads
(``/sys/class/drm/card*/device/mem_info_vram_*``, KFD topology for the gfx target), Apple Silicon
through ``sysctl``, RAM through psutil and the disk holding the studio home through
``/sys/dev/block`` and ``/sys/block/*/queue/rotational``. The CPU's load when detected (the
1-minute load average, and on a busy machine the processes using the most CPU) tells predictions
whether the machine is already busy: their times assume a quiet one.

Every outside answer comes through a ``Readers`` object (``advisor.system_readers``), so tests
replay recorded NVML, sysfs and sysctl answers for each platform. A person can override any
detected value (e.g. reserve 4 GB of VRAM for other apps) with ``with_overrides``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from advisor.cpu_load import BUSY_LOAD_PER_CORE
from advisor.system_readers import Readers

GB = 2**30
UNIFIED_GPU_SHARE = (
    0.7  # unified memory keeps 30% for the system (docs/sources.md#smart-default-rules-of-thumb)
)


@dataclass(frozen=True)
class GPU:
    vendor: str  # nvidia | amd | apple
    name: str
    vram_total_gb: float
    vram_free_gb: float
    driver: str = ""
    compute_capability: str = ""  # "8.9" (NVIDIA), "gfx1100" (AMD), "" unknown
    bf16: bool = False
    unified_memory: bool = False


@dataclass(frozen=True)
class SystemProfile:
    gpus: tuple[GPU, ...] = ()
    ram_total_gb: float = 16.0
    ram_available_gb: float = 12.0
    disk_type: str = "unknown"  # hdd | ssd | nvme | unknown
    disk_free_gb: float = 100.0
    disk_path: str = ""
    cpu_name: str = ""
    cpu_cores: int = 4
    reserved_vram_gb: float = 0.0
    notes: tuple[str, ...] = ()
    cpu_load: float | None = None  # the 1-minute load average when detected; None: unknown
    cpu_busy_processes: tuple[str, ...] = ()  # "chrome (85%)": the busiest, on a busy machine

    @property
    def load_per_core(self) -> float | None:
        """Runnable threads per core when detected (1.0: every core already has work)."""
        return None if self.cpu_load is None else self.cpu_load / max(1, self.cpu_cores)

    @property
    def cpu_busy(self) -> bool:
        """Other work already fills the cores: a run gets a share of them, not all."""
        return (self.load_per_core or 0.0) >= BUSY_LOAD_PER_CORE

    @property
    def gpu(self) -> GPU | None:
        """The card training runs on: the one with the most memory."""
        return max(self.gpus, key=lambda g: g.vram_total_gb, default=None)

    @property
    def kind(self) -> str:
        return self.gpu.vendor if self.gpu else "cpu"

    @property
    def unified(self) -> bool:
        return bool(self.gpu and self.gpu.unified_memory)

    @property
    def device(self) -> str:
        return {"nvidia": "cuda", "amd": "cuda", "apple": "mps"}.get(self.kind, "cpu")

    @property
    def bf16(self) -> bool:
        return bool(self.gpu and self.gpu.bf16)

    @property
    def usable_vram_gb(self) -> float:
        """Memory a training run may fill on its device, after reservations."""
        if self.gpu is None:
            return max(0.0, self.ram_available_gb - self.reserved_vram_gb)
        if self.gpu.unified_memory:
            return max(0.0, self.ram_total_gb * UNIFIED_GPU_SHARE - self.reserved_vram_gb)
        return max(0.0, self.gpu.vram_total_gb - self.reserved_vram_gb)

    @property
    def label(self) -> str:
        """A short device name, also the key that matches past runs to this machine."""
        return self.gpu.name if self.gpu else f"CPU {self.cpu_name}".strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------- NVIDIA
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvidia(readers: Readers) -> tuple[list[GPU], str]:
    """NVIDIA cards through NVML; ([], reason) when there is no driver or library."""
    nvml = readers.nvml()
    if nvml is None:
        return [], "nvidia-ml-py is not installed"
    error = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error as err:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
        return [], f"no NVIDIA driver ({type(err).__name__})"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        return [_nvidia_gpu(nvml, i, driver) for i in range(nvml.nvmlDeviceGetCount())], ""
    except error as err:
        return [], f"NVML failed: {err}"
    finally:
        with contextlib.suppress(error):
            nvml.nvmlShutdown()


def _nvidia_gpu(nvml: Any, index: int, driver: str) -> GPU:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GPU(
        vendor="nvidia",
        name=_text(nvml.nvmlDeviceGetName(handle)),
        vram_total_gb=memory.total / GB,
        vram_free_gb=memory.free / GB,
        driver=driver,
        compute_capability=f"{major}.{minor}",
        bf16=major >= 8,  # Ampere and newer
    )


# ------------------------------------------------------------------------------------------- AMD
_AMD_VENDOR = "0x1002"
_AMD_NAMES = {
    "0x744c": "AMD Radeon RX 7900 XTX",
    "0x7448": "AMD Radeon Pro W7900",
    "0x747e": "AMD Radeon RX 7800 XT",
    "0x73bf": "AMD Radeon RX 6900 XT",
    "0x73af": "AMD Radeon RX 6900 XT",
    "0x740c": "AMD Instinct MI250X",
    "0x740f": "AMD Instinct MI210",
    "0x74a1": "AMD Instinct MI300X",
}


def read_amd(readers: Readers) -> list[GPU]:
    """AMD cards from the amdgpu sysfs files (what rocm-smi reads), biggest first."""
    targets = _kfd_gfx_targets(readers)
    gpus = []
    for card in readers.list_dir("/sys/class/drm"):
        if re.fullmatch(r"card\d+", card):
            gpu = _amd_card(readers, f"/sys/class/drm/{card}/device", targets)
            if gpu is not None:
                gpus.append(gpu)
    return gpus


def _amd_card(readers: Readers, dev: str, targets: list[int]) -> GPU | None:
    if (readers.read_text(f"{dev}/vendor") or "").lower() != _AMD_VENDOR:
        return None
    total = _int(readers.read_text(f"{dev}/mem_info_vram_total"))
    if not total or total < GB:  # an APU's small carve-out is not a training device
        return None
    used = _int(readers.read_text(f"{dev}/mem_info_vram_used")) or 0
    device_id = (readers.read_text(f"{dev}/device") or "").lower()
    name = readers.read_text(f"{dev}/product_name") or _AMD_NAMES.get(device_id, "AMD GPU")
    gfx = targets[0] if targets else 0
    return GPU(
        vendor="amd",
        name=name,
        vram_total_gb=total / GB,
        vram_free_gb=(total - used) / GB,
        driver=readers.read_text("/sys/module/amdgpu/version") or "amdgpu",
        compute_capability=_gfx_name(gfx),
        bf16=_amd_bf16(gfx),
    )


def _kfd_gfx_targets(readers: Readers) -> list[int]:
    base = "/sys/class/kfd/kfd/topology/nodes"
    found = []
    for node in readers.list_dir(base):
        text = readers.read_text(f"{base}/{node}/properties") or ""
        match = re.search(r"gfx_target_version\s+(\d+)", text)
        if match and int(match[1]):
            found.append(int(match[1]))
    return found


def _gfx_name(version: int) -> str:
    if not version:
        return ""
    major, minor, step = version // 10000, version // 100 % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}" if major < 10 else f"gfx{major}{minor}{step:x}"


def _amd_bf16(version: int) -> bool:
    # CDNA2+ (gfx90a = 90010, gfx94x) and RDNA3+ (gfx11xx, gfx12xx) have bf16 matrix units.
    return version >= 110000 or 90010 <= version < 100000


# ----------------------------------------------------------------------------------------- Apple
def read_apple(readers: Readers, ram_total: float, ram_available: float) -> list[GPU]:
    if readers.system() != "Darwin" or readers.machine() != "arm64":
        return []
    chip = readers.sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    memory = _int(readers.sysctl("hw.memsize")) or int(ram_total)
    return [
        GPU(
            vendor="apple",
            name=chip,
            vram_total_gb=memory / GB,
            vram_free_gb=ram_available / GB,
            driver=f"macOS {readers.sysctl('kern.osproductversion') or ''}".strip(),
            compute_capability="mps",
            bf16=not re.search(r"\bM1\b", chip),  # bf16 on MPS needs M2 or newer
            unified_memory=True,
        )
    ]


# ------------------------------------------------------------------------------------ disk & CPU
def disk_type(readers: Readers, path: str) -> str:
    """hdd / ssd / nvme for the block device holding ``path``; unknown when it cannot tell."""
    device = readers.device_of(_existing(path))
    if device is None or device[0] == 0:  # overlay / tmpfs / network file systems
        return "ssd" if readers.system() == "Darwin" else "unknown"
    name = _block_device(readers, f"/sys/dev/block/{device[0]}:{device[1]}")
    if name is None:
        return "unknown"
    if name.startswith("nvme"):
        return "nvme"
    rotational = readers.read_text(f"/sys/block/{name}/queue/rotational")
    if rotational is None:
        return "unknown"
    return "hdd" if rotational == "1" else "ssd"


def _block_device(readers: Readers, sys_path: str) -> str | None:
    real = readers.realpath(sys_path)
    name = os.path.basename(real)
    if not name:
        return None
    if readers.read_text(f"{real}/partition") is not None:
        name = os.path.basename(os.path.dirname(real))
    if name.startswith("dm-"):  # LVM / LUKS: look at the device underneath
        slaves = readers.list_dir(f"/sys/block/{name}/slaves")
        name = slaves[0] if slaves else name
        real = readers.realpath(f"/sys/class/block/{name}")
        if readers.read_text(f"{real}/partition") is not None:
            name = os.path.basename(os.path.dirname(real))
    return name


def _existing(path: str) -> str:
    current = Path(path).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return str(current)


def cpu_name(readers: Readers) -> str:
    if readers.system() == "Darwin":
        return readers.sysctl("machdep.cpu.brand_string") or readers.processor()
    info = readers.read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match[1].strip()
    return readers.processor() or platform.machine()


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip(), 0) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------- profile
def detect_profile(
    home: str | Path | None = None,
    readers: Readers | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SystemProfile:
    """The profile of this machine for a studio home at ``home``, with overrides applied."""
    readers = readers or Readers()
    home = home if home is not None else os.environ.get("STUDIO_HOME", "studio_home")
    ram_total, ram_available = readers.memory()
    notes = list(readers.extra_notes)
    gpus, why = read_nvidia(readers)
    if not gpus:
        notes.append(why)
        gpus = read_amd(readers) or read_apple(readers, ram_total, ram_available)
    logical, _physical = readers.cpu_counts()
    path = _existing(str(home))
    load = readers.load_average()
    busy = load is not None and load / max(1, logical) >= BUSY_LOAD_PER_CORE
    profile = SystemProfile(
        gpus=tuple(gpus),
        ram_total_gb=ram_total / GB,
        ram_available_gb=ram_available / GB,
        disk_type=disk_type(readers, path),
        disk_free_gb=readers.disk_free(path) / GB,
        disk_path=path,
        cpu_name=cpu_name(readers),
        cpu_cores=logical,
        notes=tuple(n for n in notes if n),
        cpu_load=load,
        cpu_busy_processes=readers.busy_processes() if busy else (),
    )
    return with_overrides(profile, overrides or {})


_GPU_KEYS = {f.name for f in fields(GPU)}
_PROFILE_KEYS = {f.name for f in fields(SystemProfile)} - {"gpus"}
_TUPLE_KEYS = ("notes", "cpu_busy_processes")  # lists in JSON


def with_overrides(profile: SystemProfile, overrides: Mapping[str, Any]) -> SystemProfile:
    """A copy with some values replaced: profile keys (``reserved_vram_gb``, ``disk_type``...)
    or the main GPU's keys (``vram_total_gb``, ``bf16``, ``name``...)."""
    top = {k: v for k, v in overrides.items() if k in _PROFILE_KEYS}
    gpu_changes = {k: v for k, v in overrides.items() if k in _GPU_KEYS}
    unknown = set(overrides) - set(top) - set(gpu_changes)
    if unknown:
        raise KeyError(f"unknown profile override(s): {', '.join(sorted(unknown))}")
    if top.get("disk_type", "unknown") not in ("hdd", "ssd", "nvme", "unknown"):
        raise ValueError("disk_type must be hdd, ssd, nvme or unknown")
    profile = replace(profile, **top)
    if gpu_changes:
        main = profile.gpu
        if main is None:
            raise ValueError("this profile has no GPU to override; give a 'gpus' list instead")
        others = tuple(g for g in profile.gpus if g is not main)
        profile = replace(profile, gpus=(replace(main, **gpu_changes), *others))
    return profile


def profile_from_dict(data: Mapping[str, Any]) -> SystemProfile:
    """A profile from JSON: the full ``to_dict()`` form, or a short hand-written one such as
    ``{"gpu": {"name": "RTX 4090", "vram_total_gb": 24}, "ram_total_gb": 64}``."""
    data = dict(data)
    gpus = data.pop("gpus", None)
    if gpus is None and data.get("gpu"):
        gpus = [data.pop("gpu")]
    data.pop("gpu", None)
    gpu_list = tuple(_gpu_from_dict(g) for g in gpus or ())
    top = {k: (tuple(v) if k in _TUPLE_KEYS else v) for k, v in data.items() if k in _PROFILE_KEYS}
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise KeyError(f"unknown profile key(s): {', '.join(sorted(unknown))}")
    if "ram_available_gb" not in top and "ram_total_gb" in top:
        top["ram_available_gb"] = top["ram_total_gb"] * 0.8
    return SystemProfile(gpus=gpu_list, **top)


def _gpu_from_dict(data: Mapping[str, Any]) -> GPU:
    data = dict(data)
    vendor = data.setdefault("vendor", "nvidia")
    name = data.setdefault("name", "GPU")
    data.setdefault("vram_free_gb", data.get("vram_total_gb", 0.0))
    data.setdefault("unified_memory", vendor == "apple")
    if "bf16" not in data:
        data["bf16"] = _bf16_from_name(vendor, name)
    unknown = set(data) - _GPU_KEYS
    if unknown:
        raise KeyError(f"unknown GPU key(s): {', '.join(sorted(unknown))}")
    return GPU(**data)


def _bf16_from_name(vendor: str, name: str) -> bool:
    lowered = name.lower()
    if vendor == "apple":
        return not re.search(r"\bm1\b", lowered)
    if vendor == "amd":
        return bool(re.search(r"7\d00|9\d70|mi2[15]|mi3", lowered))
    old = re.search(r"\b(gtx|titan x|p100|p40|v100|t4\b|20[6-8]0|quadro)", lowered)
    return not old


def synthetic_profile(
    gpu_name: str | None = "NVIDIA GeForce RTX 4090",
    vram_gb: float = 24.0,
    *,
    vendor: str = "nvidia",
    ram_gb: float = 64.0,
    disk: str = "nvme",
    disk_free_gb: float = 500.0,
    cores: int = 16,
    bf16: bool | None = None,
    load: float | None = None,
) -> SystemProfile:
    """A made-up machine for examples, tests and the benchmark."""
    gpus: tuple[GPU, ...] = ()
    if gpu_name is not None:
        gpus = (
            _gpu_from_dict(
                {
                    "vendor": vendor,
                    "name": gpu_name,
                    "vram_total_gb": ram_gb if vendor == "apple" else vram_gb,
                    **({} if bf16 is None else {"bf16": bf16}),
                }
            ),
        )
    return SystemProfile(
        gpus=gpus,
        ram_total_gb=ram_gb,
        ram_available_gb=ram_gb * 0.8,
        disk_type=disk,
        disk_free_gb=disk_free_gb,
        cpu_name="CPU",
        cpu_cores=cores,
        cpu_load=load,
    )

"""System profile: recorded NVML, sysfs and sysctl answers for each platform; never CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from advisor.profile import (
    GB,
    detect_profile,
    disk_type,
    profile_from_dict,
    synthetic_profile,
    with_overrides,
)
from advisor.system_readers import Readers

ROOT = Path(__file__).resolve().parent.parent
Memory = namedtuple("Memory", "total free used")


class FakeNVML:
    """What nvidia-ml-py answered on a workstation with an RTX 4090 and an RTX 3060."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    def __init__(self, cards: list[tuple[bytes | str, int, int, tuple[int, int]]], missing=False):
        self.cards, self.missing, self.shutdown = cards, missing, False

    def nvmlInit(self) -> None:
        if self.missing:
            raise self.NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.14"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return self.cards[h][0]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Memory:
        total, free = self.cards[h][1], self.cards[h][2]
        return Memory(total, free, total - free)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return self.cards[h][3]


def readers(
    files: dict[str, str] | None = None,
    dirs: dict[str, list[str]] | None = None,
    links: dict[str, str] | None = None,
    sysctl: dict[str, str] | None = None,
    nvml: FakeNVML | None = None,
    system: str = "Linux",
    machine: str = "x86_64",
    device: tuple[int, int] | None = (259, 1),
) -> Readers:
    files, dirs, links, sysctl = files or {}, dirs or {}, links or {}, sysctl or {}
    return Readers(
        nvml=lambda: nvml or FakeNVML([], missing=True),
        read_text=files.get,
        list_dir=lambda p: dirs.get(p, []),
        realpath=lambda p: links.get(p, p),
        sysctl=sysctl.get,
        system=lambda: system,
        machine=lambda: machine,
        memory=lambda: (64 * GB, 48 * GB),
        disk_free=lambda p: 500 * GB,
        device_of=lambda p: device,
        cpu_counts=lambda: (24, 12),
        processor=lambda: "x86_64",
    )


NVME_FILES = {
    "/proc/cpuinfo": "processor\t: 0\nmodel name\t: AMD Ryzen 9 7900X 12-Core Processor\n",
    "/sys/devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p2/partition": "2",
    "/sys/block/nvme0n1/queue/rotational": "0",
}
NVME_LINKS = {"/sys/dev/block/259:1": "/sys/devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p2"}


def test_nvidia_cards_from_nvml() -> None:
    nvml = FakeNVML(
        [
            (b"NVIDIA GeForce RTX 3060", 12 * GB, 11 * GB, (8, 6)),
            ("NVIDIA GeForce RTX 4090", 24 * GB, 23 * GB, (8, 9)),
        ]
    )
    profile = detect_profile("/studio", readers(NVME_FILES, links=NVME_LINKS, nvml=nvml))
    assert [g.name for g in profile.gpus] == ["NVIDIA GeForce RTX 3060", "NVIDIA GeForce RTX 4090"]
    assert profile.gpu.name == "NVIDIA GeForce RTX 4090"  # the biggest card trains
    assert profile.gpu.compute_capability == "8.9" and profile.gpu.bf16
    assert profile.gpu.driver == "550.54.14"
    assert profile.gpu.vram_total_gb == pytest.approx(24.0)
    assert profile.gpu.vram_free_gb == pytest.approx(23.0)
    assert profile.kind == "nvidia" and profile.device == "cuda"
    assert profile.disk_type == "nvme" and profile.disk_free_gb == pytest.approx(500)
    assert profile.cpu_name == "AMD Ryzen 9 7900X 12-Core Processor"
    assert profile.cpu_cores == 24
    assert profile.ram_total_gb == pytest.approx(64) and profile.ram_available_gb == pytest.approx(
        48
    )
    assert nvml.shutdown


def test_turing_card_has_no_bf16() -> None:
    nvml = FakeNVML([(b"NVIDIA GeForce RTX 2080 Ti", 11 * GB, 10 * GB, (7, 5))])
    profile = detect_profile("/", readers(nvml=nvml))
    assert not profile.bf16


def test_missing_nvml_library_is_caught_and_noted() -> None:
    profile = detect_profile("/", readers(NVME_FILES, links=NVME_LINKS))
    assert profile.gpus == () and profile.kind == "cpu" and profile.device == "cpu"
    assert any("NVMLError_LibraryNotFound" in note for note in profile.notes)
    assert profile.usable_vram_gb == pytest.approx(48)  # on a CPU, training fills RAM


AMD_FILES = {
    "/sys/class/drm/card0/device/vendor": "0x1002",
    "/sys/class/drm/card0/device/device": "0x744c",
    "/sys/class/drm/card0/device/mem_info_vram_total": str(24 * GB),
    "/sys/class/drm/card0/device/mem_info_vram_used": str(2 * GB),
    "/sys/class/drm/card1/device/vendor": "0x1002",  # the CPU's iGPU with a 512 MB carve-out
    "/sys/class/drm/card1/device/mem_info_vram_total": str(GB // 2),
    "/sys/module/amdgpu/version": "6.7.0",
    "/sys/class/kfd/kfd/topology/nodes/0/properties": "cpu_cores_count 16\ngfx_target_version 0",
    "/sys/class/kfd/kfd/topology/nodes/1/properties": "simd_count 192\ngfx_target_version 110000",
}
AMD_DIRS = {
    "/sys/class/drm": ["card0", "card0-DP-1", "card1", "renderD128"],
    "/sys/class/kfd/kfd/topology/nodes": ["0", "1"],
}


def test_amd_card_from_sysfs() -> None:
    profile = detect_profile("/", readers(AMD_FILES, AMD_DIRS, device=None))
    assert len(profile.gpus) == 1
    gpu = profile.gpu
    assert gpu.vendor == "amd" and gpu.name == "AMD Radeon RX 7900 XTX"
    assert gpu.vram_total_gb == pytest.approx(24) and gpu.vram_free_gb == pytest.approx(22)
    assert gpu.compute_capability == "gfx1100" and gpu.bf16
    assert gpu.driver == "6.7.0"
    assert profile.device == "cuda"  # ROCm builds of PyTorch use the cuda device
    assert profile.disk_type == "unknown"


def test_rdna2_has_no_bf16() -> None:
    files = {
        **AMD_FILES,
        "/sys/class/kfd/kfd/topology/nodes/1/properties": "gfx_target_version 100300",
    }
    gpu = detect_profile("/", readers(files, AMD_DIRS)).gpu
    assert gpu.compute_capability == "gfx1030" and not gpu.bf16


APPLE_SYSCTL = {
    "machdep.cpu.brand_string": "Apple M2 Max",
    "hw.memsize": str(32 * GB),
    "kern.osproductversion": "14.4",
}


def test_apple_silicon_unified_memory_from_sysctl() -> None:
    r = readers(sysctl=APPLE_SYSCTL, system="Darwin", machine="arm64", device=(1, 4))
    profile = detect_profile("/", r)
    gpu = profile.gpu
    assert gpu.vendor == "apple" and gpu.unified_memory and gpu.bf16
    assert gpu.vram_total_gb == pytest.approx(32)
    assert profile.device == "mps" and profile.cpu_name == "Apple M2 Max"
    assert profile.usable_vram_gb == pytest.approx(64 * 0.7)  # 70% of RAM (readers say 64)
    assert profile.disk_type == "unknown"  # no /sys on macOS


def test_apple_m1_has_no_bf16() -> None:
    sysctl = {**APPLE_SYSCTL, "machdep.cpu.brand_string": "Apple M1"}
    assert not detect_profile("/", readers(sysctl=sysctl, system="Darwin", machine="arm64")).bf16


def test_intel_mac_is_cpu_only() -> None:
    profile = detect_profile("/", readers(sysctl=APPLE_SYSCTL, system="Darwin", machine="x86_64"))
    assert profile.kind == "cpu"


@pytest.mark.parametrize(
    ("links", "files", "dirs", "expected"),
    [
        (NVME_LINKS, NVME_FILES, {}, "nvme"),
        (
            {"/sys/dev/block/8:1": "/sys/devices/ata1/host0/block/sda/sda1"},
            {
                "/sys/devices/ata1/host0/block/sda/sda1/partition": "1",
                "/sys/block/sda/queue/rotational": "1",
            },
            {},
            "hdd",
        ),
        (
            {"/sys/dev/block/8:1": "/sys/devices/ata1/host0/block/sdb"},
            {"/sys/block/sdb/queue/rotational": "0"},
            {},
            "ssd",
        ),
        (  # LVM: dm-0 sits on an NVMe partition
            {
                "/sys/dev/block/8:1": "/sys/devices/virtual/block/dm-0",
                "/sys/class/block/nvme0n1p3": "/sys/devices/pci/nvme/nvme0n1/nvme0n1p3",
            },
            {"/sys/devices/pci/nvme/nvme0n1/nvme0n1p3/partition": "3"},
            {"/sys/block/dm-0/slaves": ["nvme0n1p3"]},
            "nvme",
        ),
        ({}, {}, {}, "unknown"),
    ],
)
def test_disk_type(links: dict, files: dict, dirs: dict, expected: str) -> None:
    r = readers(files, dirs, links, device=(8, 1) if "/sys/dev/block/8:1" in links else (259, 1))
    if not links:
        r = readers(device=(0, 42))  # overlay / tmpfs: no block device
    assert disk_type(r, "/") == expected


def test_overrides_reserve_vram_and_replace_values() -> None:
    base = synthetic_profile("NVIDIA GeForce RTX 4090", 24.0)
    changed = with_overrides(base, {"reserved_vram_gb": 4, "disk_type": "hdd", "vram_total_gb": 20})
    assert changed.usable_vram_gb == pytest.approx(16)
    assert changed.disk_type == "hdd" and base.disk_type == "nvme"
    with pytest.raises(KeyError):
        with_overrides(base, {"vram": 3})
    with pytest.raises(ValueError):
        with_overrides(base, {"disk_type": "floppy"})


def test_overrides_are_applied_by_detection() -> None:
    profile = detect_profile("/", readers(), overrides={"reserved_vram_gb": 8.0})
    assert profile.usable_vram_gb == pytest.approx(40)


def test_profile_json_round_trip_and_short_form() -> None:
    full = synthetic_profile("NVIDIA GeForce RTX 3060", 12.0, ram_gb=32)
    assert profile_from_dict(json.loads(json.dumps(full.to_dict()))) == full
    short = profile_from_dict(
        {"gpu": {"name": "Tesla T4", "vram_total_gb": 16}, "ram_total_gb": 32}
    )
    assert (
        short.gpu.vendor == "nvidia"
        and not short.bf16
        and short.ram_available_gb == pytest.approx(25.6)
    )
    assert profile_from_dict({"gpu": {"name": "RTX A6000", "vram_total_gb": 48}}).bf16
    with pytest.raises(KeyError):
        profile_from_dict({"gpu": {"name": "x", "vram": 1}})


def test_detection_on_this_machine_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, json; from advisor.profile import detect_profile; "
        f"p = detect_profile({str(tmp_path)!r}); "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'cores': p.cpu_cores}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result == {"torch": False, "cores": result["cores"]} and result["cores"] >= 1


# ------------------------------------------------------------------------------- CPU load
def test_detection_records_the_load_and_on_a_busy_machine_who_uses_the_cpu() -> None:
    found = readers()  # 24 logical cores
    found.load_average = lambda: 132.0
    found.busy_processes = lambda: ("chrome (180%)", "python3 (95%)")
    profile = detect_profile("/", found)
    assert profile.cpu_load == 132.0 and profile.load_per_core == pytest.approx(5.5)
    assert profile.cpu_busy and profile.cpu_busy_processes == ("chrome (180%)", "python3 (95%)")
    again = profile_from_dict(json.loads(json.dumps(profile.to_dict())))  # lists back to tuples
    assert again == profile and hash(again) == hash(profile)


def test_a_quiet_machine_is_not_busy_and_its_processes_are_not_watched() -> None:
    def watched() -> tuple[str, ...]:
        raise AssertionError("processes are only watched on a busy machine (it takes 0.2 s)")

    found = readers()
    found.load_average, found.busy_processes = (lambda: 2.4), watched
    profile = detect_profile("/", found)
    assert profile.load_per_core == pytest.approx(0.1) and not profile.cpu_busy
    assert profile.cpu_busy_processes == ()
    found.load_average = lambda: None  # no load average on this system: unknown, not quiet
    unknown = detect_profile("/", found)
    assert unknown.cpu_load is None and unknown.load_per_core is None and not unknown.cpu_busy


def test_the_load_is_per_core_of_the_cores_the_profile_counts() -> None:
    two_cores = synthetic_profile(None, cores=2, load=11.0)
    assert two_cores.load_per_core == pytest.approx(5.5) and two_cores.cpu_busy
    assert not with_overrides(two_cores, {"cpu_cores": 16}).cpu_busy  # 0.69 per core
    assert not synthetic_profile(None, cores=2).cpu_busy  # load unknown


def test_the_real_load_readers_answer_on_this_machine() -> None:
    from advisor.cpu_load import busy_processes, load_average

    load = load_average()
    assert load is None or load >= 0
    busiest = busy_processes()
    assert len(busiest) <= 3 and all(p.endswith("%)") for p in busiest)

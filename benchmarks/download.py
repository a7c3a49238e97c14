"""Model downloads: the studio's path against huggingface_hub's own ``hf download``.

A local fake Hub (``tests/fake_hub.py``, the one the tests use) serves a repository shaped like
an SD1.5 diffusers model whose U-Net file is ``SIZE_MB`` of random bytes. Each round downloads
the same files into a fresh cache twice, in alternating order: once with the studio's command
(``python -m trainer model download``, what the Download button runs, progress file included)
and once with ``hf download REPO --include FILES``. Reported: medians and the throughput ratio
(studio / hf; the issue asks for >= 0.9). Then the time from an id to its size and cache status
(``inspect_repo`` + ``cache_status``, what the Model step shows; the issue asks for < 1 s).

Run: ``.venv/bin/python benchmarks/download.py [SIZE_MB] [ROUNDS]``
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_hub import FakeHub  # noqa: E402
from hub_server import write_safetensors  # noqa: E402

from trainer.demo.tiny import build_tiny_pipeline  # noqa: E402

REPO = "bench/sd15-shaped"
UNET = "unet/diffusion_pytorch_model.safetensors"


def make_repo(folder: Path, size_mb: int) -> Path:
    repo = build_tiny_pipeline("sd15", folder / "repo")
    write_safetensors(repo / UNET, os.urandom(size_mb * 2**20))
    for extra in (folder / "repo" / ".complete",):
        extra.unlink(missing_ok=True)
    return repo


def client_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "STUDIO_OFFLINE")}
    env |= {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1",
    }
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(size_mb: int = 512, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeHub() as hub:
        work = Path(tmp)
        repo = make_repo(work, size_mb)
        hub.add_repo(REPO, repo)
        files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
        total_mb = sum((repo / f).stat().st_size for f in files) / 2**20
        studio = [sys.executable, "-m", "trainer", "model", "download", REPO, "--arch", "sd15"]
        studio += ["--quiet", "--progress-file", str(work / "progress.json")]
        hf = [str(Path(sys.executable).with_name("hf")), "download", REPO, "--include", *files]
        times: dict[str, list[float]] = {"studio": [], "hf download": []}
        for round_index in range(rounds):
            order = [("studio", studio), ("hf download", hf)]
            for name, cmd in order if round_index % 2 == 0 else order[::-1]:
                hf_home = work / f"hf_{name.replace(' ', '_')}_{round_index}"
                times[name].append(timed(cmd, client_env(hub.endpoint, hf_home)))
                shutil.rmtree(hf_home, ignore_errors=True)
        print(f"download of {len(files)} files, {total_mb:.0f} MB, {rounds} rounds (median):")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:12s} {median:6.2f} s  {total_mb / median:7.1f} MB/s  {values}")
        ratio = statistics.median(times["hf download"]) / statistics.median(times["studio"])
        print(f"  throughput ratio studio / hf download: {ratio:.2f} (target >= 0.9)")
        print_lookup_latency(hub.endpoint, work)


def print_lookup_latency(endpoint: str, work: Path) -> None:
    """Seconds from an id to its size and cache status, measured in a fresh process whose
    huggingface_hub points at the fake Hub (imports warm before the first look-up, as in the
    running studio)."""
    code = (
        "import statistics, time\n"
        "from trainer.models.hub import cache_status, inspect_repo\n"
        "samples = []\n"
        "for _ in range(10):\n"
        "    start = time.perf_counter()\n"
        f"    check = inspect_repo({REPO!r}, 'sd15')\n"
        "    cache_status(check.plan)\n"
        "    samples.append(time.perf_counter() - start)\n"
        "print(f'id -> size and cache status: median {statistics.median(samples) * 1000:.0f} ms, '\n"
        "      f'max {max(samples) * 1000:.0f} ms over {len(samples)} look-ups (target < 1 s); '\n"
        "      f'{check.plan.total_bytes / 1e6:.0f} MB in {len(check.plan.files)} files')\n"
    )
    env = client_env(endpoint, work / "hf_lookup")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    print(done.stdout.strip() or done.stderr[-2000:])


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

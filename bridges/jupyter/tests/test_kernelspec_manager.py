"""The bridge's KernelSpecManager behaves as stock jupyter_client's, plus provider kernels."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.kernelspecapp import _limit_to_missing
from jupyter_client.manager import AsyncKernelManager

from kernel_providers_jupyter import KernelProvidersKernelSpecManager

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def write_spec(folder: Path, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(
        {"argv": IPYKERNEL, "display_name": folder.name, "language": "python", **extra}))
    return folder


def stock_kernels(jupyter_env: Path) -> Path:
    return Path(os.environ["JUPYTER_PATH"]) / "kernels"


def test_kernelspecs_created_changed_and_removed_are_seen_at_once(
        jupyter_env: Path, tmp_path: Path) -> None:
    ksm = KernelProvidersKernelSpecManager()
    hidden = tmp_path / "hidden-kernels"  # [providers.spec] extra_dirs: bridged kernels
    assert "kp-bridge-only" in ksm.find_kernel_specs()
    for kernels, name in ((hidden, "fresh-bridged"), (stock_kernels(jupyter_env), "fresh")):
        folder = write_spec(kernels / name)
        assert name in ksm.find_kernel_specs()
        assert ksm.get_kernel_spec(name).display_name == name
        write_spec(folder, display_name="renamed")
        assert ksm.get_all_specs()[name]["spec"]["display_name"] == "renamed"
        (folder / "kernel.json").unlink()
        folder.rmdir()
        assert name not in ksm.find_kernel_specs()
        with pytest.raises(NoSuchKernel):
            ksm.get_kernel_spec(name)


def test_stock_behaviour_for_its_own_kernel_dirs(jupyter_env: Path, tmp_path: Path) -> None:
    stock, ours = KernelSpecManager(), KernelProvidersKernelSpecManager()
    stock_specs, our_specs = stock.get_all_specs(), ours.get_all_specs()
    for name, item in stock_specs.items():  # everything stock sees, exactly
        assert our_specs[name] == item, name
    added = set(our_specs) - set(stock_specs)  # the provider kernels, through our provisioner
    assert "kp-bridge-only" in added
    for name in added:
        assert our_specs[name]["spec"]["metadata"]["kernel_provisioner"][
            "provisioner_name"] == "kernel-providers-provisioner"
    assert ours.find_kernel_specs()["kp-bridge"] == stock.find_kernel_specs()["kp-bridge"]
    # configured kernel_dirs and allowed_kernelspecs apply as to stock
    only = tmp_path / "only"
    write_spec(only / "solo")
    narrowed = KernelProvidersKernelSpecManager(kernel_dirs=[str(only)],
                                                ensure_native_kernel=False)
    assert {"solo", "kp-bridge", "kp-bridge-only"} <= set(narrowed.find_kernel_specs())
    assert narrowed.find_kernel_specs()["solo"] == str(only / "solo")
    allowed = KernelProvidersKernelSpecManager(allowed_kernelspecs={"kp-bridge",
                                                                    "kp-bridge-only"})
    assert set(allowed.get_all_specs()) == {"kp-bridge", "kp-bridge-only"}


def test_a_subclass_override_applies(jupyter_env: Path) -> None:
    class Custom(KernelProvidersKernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> Any:
            spec = super().get_kernel_spec(kernel_name)
            spec.display_name = f"custom {spec.display_name}"
            return spec

    specs = Custom().get_all_specs()
    assert specs["kp-bridge"]["spec"]["display_name"] == "custom KP Bridge"
    assert specs["kp-bridge-only"]["spec"]["display_name"] == "custom KP Bridge only"


def test_install_and_remove_as_stock(jupyter_env: Path, tmp_path: Path) -> None:
    source = write_spec(tmp_path / "src" / "installed-one")
    ksm = KernelProvidersKernelSpecManager()
    target = ksm.install_kernel_spec(str(source), user=True)
    assert ksm.find_kernel_specs()["installed-one"] == target
    assert ksm.remove_kernel_spec("installed-one") == target
    assert not Path(target).exists() and "installed-one" not in ksm.find_kernel_specs()


def test_remove_never_deletes_a_provider_kernel(jupyter_env: Path) -> None:
    ksm = KernelProvidersKernelSpecManager()
    folder = Path(ksm.find_kernel_specs()["kp-bridge-only"])
    with pytest.raises(PermissionError) as caught:
        ksm.remove_kernel_spec("kp-bridge-only")
    assert "spec/kp-bridge-only" in str(caught.value) and "KERNEL_PROVIDERS_DISABLE" in \
        str(caught.value)
    assert folder.is_dir() and "kp-bridge-only" in ksm.find_kernel_specs()


def test_remove_never_deletes_a_packages_folder(jupyter_env: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A distribution (a dist-info folder on sys.path) whose RECORD lists the kernelspec.
    site = tmp_path / "site"
    kernels = site / "share" / "jupyter" / "kernels"
    folder = write_spec(kernels / "packaged")
    dist = site / "kp_packaged_kernel-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kp-packaged-kernel\n"
                                   "Version: 1.0\n")
    (dist / "RECORD").write_text("share/jupyter/kernels/packaged/kernel.json,,\n")
    monkeypatch.syspath_prepend(str(site))
    ksm = KernelProvidersKernelSpecManager(kernel_dirs=[str(kernels)])
    with pytest.raises(PermissionError, match="kp-packaged-kernel"):
        ksm.remove_kernel_spec("packaged")
    assert folder.is_dir()


def test_a_kernelspecs_own_provisioner_is_kept(jupyter_env: Path) -> None:
    kernels = stock_kernels(jupyter_env)
    write_spec(kernels / "own-local", metadata={
        "kernel_provisioner": {"provisioner_name": "local-provisioner"}})
    write_spec(kernels / "own-missing", metadata={
        "kernel_provisioner": {"provisioner_name": "kp-not-installed-provisioner"}})
    ours, stock = KernelProvidersKernelSpecManager(), KernelSpecManager()
    assert ours.get_kernel_spec("own-local").metadata["kernel_provisioner"] == \
        stock.get_kernel_spec("own-local").metadata["kernel_provisioner"]
    assert ours.get_kernel_spec("own-local").metadata["kernel_provisioner"][
        "provisioner_name"] == "local-provisioner"
    errors = []
    for ksm in (stock, ours):  # the same error as stock jupyter_client
        with pytest.raises(NoSuchKernel) as caught:
            ksm.get_kernel_spec("own-missing")
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]
    assert "own-missing" not in ours.get_all_specs()

    async def start() -> str:
        km = AsyncKernelManager(kernel_name="own-local", kernel_spec_manager=ours)
        await km.start_kernel()
        try:
            return type(km.provisioner).__name__
        finally:
            await km.shutdown_kernel(now=True)

    assert asyncio.run(start()) == "LocalProvisioner"


def test_no_kernel_looks_missing(jupyter_env: Path) -> None:
    # `jupyter kernelspec list --missing` reads argv[0]: provider kernels have the shim's.
    write_spec(stock_kernels(jupyter_env) / "gone", argv=["/nonexistent/python", "-f", "x"])
    ksm = KernelProvidersKernelSpecManager()
    paths, missing = _limit_to_missing(ksm.find_kernel_specs(), ksm.get_all_specs())
    assert set(missing) == {"gone"} and set(paths) == {"gone"}
    bridged = ksm.get_kernel_spec("kp-bridge-only")
    assert bridged.argv[0] == sys.executable and Path(bridged.argv[0]).exists()

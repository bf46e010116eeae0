"""The kernelspec provider: Jupyter's path and precedence, validation, what it honours."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from kernel_providers import Config, KernelFinder, LaunchFailed
from kernel_providers.testing import run_code
from kernel_providers_kernelspec import KernelSpecProvider

Writer = Callable[..., Path]
Spec = Callable[..., dict[str, Any]]


def spec_finder(**table: Any) -> KernelFinder:
    return KernelFinder(Config(providers={"spec": table}))


def listing(finder: KernelFinder) -> dict[str, Any]:
    return {k.id: k for k in asyncio.run(finder.find_kernels(provider="spec"))}


def test_lists_what_jupyter_lists_with_its_precedence(write_spec: Writer,
                                                     python_spec: Spec) -> None:
    write_spec("shared", python_spec("First"), where=0)
    write_spec("shared", python_spec("Second"), where=1)
    write_spec("Upper", python_spec("Upper case"), where=1)
    kernels = listing(spec_finder())
    assert kernels["spec/shared"].display_name == "First"
    assert "spec/upper" in kernels
    theirs = KernelSpecManager().find_kernel_specs()
    assert {f"spec/{name}" for name in theirs} == set(kernels)


def test_malformed_specs_are_reported_per_file(write_spec: Writer, python_spec: Spec) -> None:
    write_spec("good", python_spec())
    bad = {
        "badjson": "{not json",
        "noargv": {"display_name": "x"},
        "emptyargv": {"argv": []},
        "argvtypes": {"argv": ["python", 3]},
        "envtypes": {"argv": ["k"], "env": {"A": 1}},
        "badmode": {"argv": ["k"], "interrupt_mode": "telepathy"},
        "notobject": "[1, 2]",
        "metadatatype": {"argv": ["k"], "metadata": []},
    }
    for name, spec in bad.items():
        write_spec(name, spec)
    write_spec("bad name!", python_spec())
    # A broken spec in the first folder shadows a good one further down, as in Jupyter.
    write_spec("badjson", python_spec(), where=1)
    finder = spec_finder()
    kernels = listing(finder)
    assert "spec/good" in kernels
    assert not {f"spec/{n}" for n in bad} & set(kernels)
    problems = next(r for r in finder.reports if r.id == "spec").problems
    assert len(problems) == len(bad) + 1
    joined = "\n".join(problems)
    assert "badjson/kernel.json: invalid JSON" in joined
    assert "noargv/kernel.json: 'argv' must be a non-empty list" in joined
    assert "envtypes/kernel.json: every value of 'env' must be a string" in joined
    assert "badmode/kernel.json: 'interrupt_mode' must be 'signal' or 'message'" in joined
    assert "'bad name!' is not valid" in joined


def test_fields_and_resources(write_spec: Writer, python_spec: Spec) -> None:
    folder = write_spec("full", python_spec("Full", interrupt_mode="message",
                                            metadata={"debugger": True}))
    for name in ("logo-64x64.png", "logo-svg.svg", "kernel.js", "notes.txt"):
        (folder / name).write_text("x")
    kernel = listing(spec_finder())["spec/full"]
    assert (kernel.display_name, kernel.language, kernel.interrupt_mode) == (
        "Full", "python", "message")
    assert kernel.metadata == {"debugger": True, "resource_dir": str(folder)}
    assert kernel.resources == {"logo-64x64": str(folder / "logo-64x64.png"),
                                "logo-svg": str(folder / "logo-svg.svg"),
                                "kernel.js": str(folder / "kernel.js")}


def test_config_exclude_extra_dirs_and_native_python(write_spec: Writer, python_spec: Spec,
                                                     tmp_path: Path) -> None:
    write_spec("keep", python_spec())
    write_spec("drop-me", python_spec())
    extra = tmp_path / "extra"
    (extra / "extra-one").mkdir(parents=True)
    (extra / "extra-one" / "kernel.json").write_text(json.dumps(python_spec("Extra")))
    kernels = listing(spec_finder(exclude=["drop-*"], extra_dirs=[str(extra)]))
    assert {"spec/keep", "spec/extra-one"} <= set(kernels)
    assert "spec/drop-me" not in kernels
    # ipykernel's own kernel is offered when no python3 kernelspec exists, as in Jupyter.
    native = kernels.get("spec/python3")
    if native is not None:
        assert native.language == "python"
    assert "spec/python3" not in listing(spec_finder(native_python=False)) or \
        Path(native.metadata["resource_dir"], "kernel.json").exists()  # type: ignore[union-attr]


def test_launch_honours_env_argv_and_python_alias(write_spec: Writer) -> None:
    write_spec("envy", {
        "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.extra_extensions=[]"],
        "display_name": "Envy", "language": "python",
        "env": {"KP_SPEC_VAR": "from kernel.json", "KP_RES": "{resource_dir}"},
    })

    async def scenario() -> None:
        launcher = await spec_finder().launch("spec/envy")
        try:
            out, _, _ = await run_code(launcher, (
                "import os, sys; print(os.environ['KP_SPEC_VAR']); print(sys.executable)"))
            assert out == f"from kernel.json\n{sys.executable}\n"
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_spec_removed_after_listing_fails_clearly(write_spec: Writer, python_spec: Spec,
                                                  kp_isolated: Path) -> None:
    folder = write_spec("fleeting", python_spec())
    finder = spec_finder()
    listing(finder)
    (folder / "kernel.json").unlink()

    async def scenario() -> None:
        with pytest.raises(LaunchFailed, match=r"fleeting/kernel\.json: cannot read"):
            await finder.launch("spec/fleeting")

    asyncio.run(scenario())
    assert list(kp_isolated.iterdir()) == []


def test_provider_is_found_through_its_entry_point() -> None:
    provider = KernelFinder(Config()).providers["spec"]
    assert isinstance(provider, KernelSpecProvider)
    assert provider.distribution == "kernel-providers-kernelspec"

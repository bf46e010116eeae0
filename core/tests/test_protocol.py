"""The wire protocol: signatures compatible with jupyter_client, and real ipykernel talk."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from jupyter_client.session import Session as JupyterSession

from kernel_providers import KernelType, LaunchOptions, launch_local
from kernel_providers.protocol import KernelConnection, ProtocolError, Session

KEY = "3f4b1c0e9a6d8b7c5e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"


def test_our_signature_matches_jupyter_client() -> None:
    ours = Session(KEY)
    theirs = JupyterSession(key=KEY.encode(), signature_scheme="hmac-sha256")
    msg = ours.message("kernel_info_request", {"a": [1, 2]})
    frames = ours.serialize(msg)
    assert frames[1] == theirs.sign(frames[2:6])
    # jupyter_client accepts what we send ...
    _, parts = theirs.feed_identities(frames)
    read = theirs.deserialize(parts)
    assert read["header"]["msg_type"] == "kernel_info_request"
    assert read["content"] == {"a": [1, 2]}


def test_we_read_what_jupyter_client_sends() -> None:
    theirs = JupyterSession(key=KEY.encode(), signature_scheme="hmac-sha256")
    msg = theirs.msg("execute_request", {"code": "1"})
    frames = theirs.serialize(msg, ident=[b"someone"])
    read = Session(KEY).deserialize(frames)
    assert read["msg_type"] == "execute_request" and read["content"] == {"code": "1"}


def test_bad_signature_and_framing_are_rejected() -> None:
    frames = Session(KEY).serialize(Session(KEY).message("status"))
    with pytest.raises(ProtocolError, match="invalid signature"):
        Session(KEY.replace("3", "4")).deserialize(frames)
    with pytest.raises(ProtocolError, match="delimiter"):
        Session(KEY).deserialize(frames[1:])
    with pytest.raises(ProtocolError, match="signature scheme"):
        Session(KEY, "hmac-md5")


def test_real_ipykernel_ready_execute_interrupt_shutdown(kp_isolated: Path) -> None:
    kernel_type = KernelType(id="t/py", display_name="py", language="python", provider="t")
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

    async def scenario() -> None:
        launcher = await launch_local(kernel_type, argv, LaunchOptions())
        try:
            async with KernelConnection(launcher.connection_info) as conn:
                info = await conn.wait_ready(60, lambda: launcher.poll() is None)
                assert info["content"]["language_info"]["name"] == "python"
                seen: list[str] = []
                reply = await conn.execute("print('out'); 'res'",
                                           lambda m: seen.append(m["msg_type"]))
                assert reply["content"]["status"] == "ok"
                assert "stream" in seen and "execute_result" in seen
                busy = asyncio.ensure_future(conn.execute("import time; time.sleep(60)"))
                await asyncio.sleep(0.5)
                assert (await conn.interrupt())["content"]["status"] == "ok"  # type: ignore[index]
                assert (await busy)["content"]["ename"] == "KeyboardInterrupt"
                assert (await conn.shutdown())["content"]["restart"] is False  # type: ignore[index]
            assert await asyncio.wait_for(launcher.wait(), 30) == 0
        finally:
            await launcher.cleanup()

    asyncio.run(scenario())

"""A well-behaved plugin, installed as the fake distribution kp-fake-good 1.0."""

from kernel_providers import KernelProvider, KernelType, LaunchFailed, hookimpl


class GoodProvider(KernelProvider):
    id = "fakegood"

    async def find_kernels(self):
        return [KernelType(id="fakegood/one", display_name="One", language="python",
                           provider="fakegood")]

    async def launch(self, kernel_type, options):  # listing only
        raise LaunchFailed(f"{kernel_type.id}: this test provider only lists")


@hookimpl
def register_kernel_providers():
    yield GoodProvider()


async def _hello(args):
    print(f"hello from fakegood, {args.name}")
    return 0


@hookimpl
def register_cli_commands(subparsers):
    parser = subparsers.add_parser("fakegood-hello", help="a command added by a plugin")
    parser.add_argument("name")
    parser.set_defaults(handler=_hello)

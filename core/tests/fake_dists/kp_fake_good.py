"""A well-behaved plugin, installed as the fake distribution kp-fake-good 1.0."""

from kernel_providers import KernelProvider, KernelType, hookimpl


class GoodProvider(KernelProvider):
    id = "fakegood"

    async def find_kernels(self):
        return [KernelType(id="fakegood/one", display_name="One", language="python",
                           provider="fakegood")]


@hookimpl
def register_kernel_providers():
    yield GoodProvider()

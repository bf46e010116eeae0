"""A plugin that claims a provider id already taken by kp-fake-good."""

from kernel_providers import KernelProvider, LaunchFailed, hookimpl


class DuplicateProvider(KernelProvider):
    id = "fakegood"

    async def find_kernels(self):
        return []

    async def launch(self, kernel_type, options):  # listing only
        raise LaunchFailed(f"{kernel_type.id}: this test provider only lists")


@hookimpl
def register_kernel_providers():
    yield DuplicateProvider()

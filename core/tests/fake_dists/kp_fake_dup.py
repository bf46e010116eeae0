"""A plugin that claims a provider id already taken by kp-fake-good."""

from kernel_providers import KernelProvider, hookimpl


class DuplicateProvider(KernelProvider):
    id = "fakegood"

    async def find_kernels(self):
        return []


@hookimpl
def register_kernel_providers():
    yield DuplicateProvider()

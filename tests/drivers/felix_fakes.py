"""Old home of the kernel fakes, now in :mod:`tests.fakes`; kept so branches in flight still import."""

from tests.fakes.netlink import FakeNetlink
from tests.fakes.sysctls import FakeSysctls

__all__ = ["FakeNetlink", "FakeSysctls"]

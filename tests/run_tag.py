"""tests.run_tag: the unique tag of this pytest process, carried by every namespace, veth, process and key it makes.

"lt" + 4 hex: short enough that tag-prefixed interface names stay under Linux's 15 characters.
"""

from __future__ import annotations

import uuid

RUN_TAG = "lt" + uuid.uuid4().hex[:4]

"""Where the public rule sets (signature-base, elastic protections-artifacts) live: beside the
clone in ``../shared/rulesets``, or ``SCANNER_RULESETS``. ``.ci/run`` fails before the tests when
they are missing, so no test skips for them."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PUBLIC_RULESETS = Path(os.environ.get("SCANNER_RULESETS", str(REPO.parent / "shared" / "rulesets")))
SIGNATURE_BASE = PUBLIC_RULESETS / "signature-base" / "rules"

"""Where the tests find the checkout, its fixtures and the public samples, wherever they sit."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
#: ../shared/samples beside the checkout (absent on a user's machine: those tests skip)
SAMPLES = REPO.parent / "shared" / "samples"

"""The distributed tests use the integration suite's dataset factory."""
from tests.integration.conftest import make_dataset  # noqa: F401

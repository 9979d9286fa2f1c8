"""Collection rules for the whole repository (the tests' own fixtures are in tests/conftest.py)."""

import importlib.util

# The vLLM integration imports vLLM, which lives in an environment of its own (`make test-vllm`): elsewhere
# its module is not collected for doctests.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["entropic/integrations/vllm.py"]

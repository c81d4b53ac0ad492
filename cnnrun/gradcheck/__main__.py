"""``python -m cnnrun.gradcheck [--batch N] [--max-checks N] [overrides]`` (see
:func:`cnnrun.run.tools.gradcheck_main`)."""

from ..run.tools import gradcheck_main

gradcheck_main()

"""Code the benchmark scripts share: paths and configs, clocks, the plain reference loop, reports.

Modules import their heavy libraries (Lightning, matplotlib) only where a function needs them, so
a script's ``--help`` stays fast.
"""

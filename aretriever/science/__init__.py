"""The science stage: lightcurve statistics, quality cuts, the S/N finder, injections, histograms.

Everything here is pure (tables in, tables and dataclasses out) and runs in the process pool.
"""

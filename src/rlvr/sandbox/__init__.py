"""The code-execution sandbox: a warm pool of isolated workers that run untrusted programs.

It knows nothing about tasks; :mod:`rlvr.domains.code.verify` builds the programs and reads the results.
"""

"""Plumbing both `wtours` and `dora` stand on, and nothing else: atomic files (`files`), progress and
JSON-lines reporting (`report`), CLI exit codes (`exits`), rank/world splitting (`dist`), external tool
paths and versions (`tools`), child processes that die with their parent (`children`)."""

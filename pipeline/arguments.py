"""The error a library function raises for a bad argument, naming the argument at fault.

Library code (nets, diffusion, training, data) checks its own arguments with plain functions
beside the thing they describe, and raises `ArgumentError` naming the argument (with an index
into a list: ``attention_resolutions[1]``). Other arguments a message mentions are written in
backquotes (``"must be below `lambda_max`"``), so config loading, which calls the same
functions, can name the config keys instead (pipeline.typed_yaml.Fail.naming). Pure Python:
every package may import it.
"""
from __future__ import annotations

from typing import Any


class ArgumentError(ValueError):
    def __init__(self, argument: str, value: Any, problem: str):
        self.argument, self.value, self.problem = argument, value, problem
        super().__init__(f"{argument}={value!r}: {problem.replace('`', '')}")

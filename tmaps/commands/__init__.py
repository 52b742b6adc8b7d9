"""The commands, one module per command: what it does and, beside it, its Hydra entry point ``main``
(``tmaps-train`` is :func:`tmaps.commands.train.main`, configured by ``conf/train.yaml``).

Every entry point is wrapped by :func:`tmaps.commands.wrapper.task_wrapper`. Nothing but the
console scripts imports a command: what other code needs lives in the library.
"""

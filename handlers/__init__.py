"""tradeguard's handlers: the pure core (``handlers.core``), one flow per kind of message
on one exactly-once mechanism (``handlers.flows``), their ports (``handlers.ports``) and
the Azure adapters (``handlers.adapters``), and the function bodies
(``handlers.entrypoints``). Importing this package imports no adapter."""

__all__: list[str] = []

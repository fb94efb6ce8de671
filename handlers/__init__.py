"""tradeguard's handlers: the pure core (``handlers.core``), the service layer
(``handlers.service``), its ports and the Azure adapters (``handlers.adapters``), and the
function bodies (``handlers.entrypoints``). Importing this package imports no adapter."""

__all__: list[str] = []

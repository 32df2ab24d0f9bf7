"""Linea's desktop window. It talks to the runtime only through `runtime`'s public API."""

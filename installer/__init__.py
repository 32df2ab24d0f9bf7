"""Packaging Linea for Windows: PyInstaller spec, NSIS installer script, build command."""

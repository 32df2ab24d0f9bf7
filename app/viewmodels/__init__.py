"""State without widgets: settings, history, the generation session and its worker thread."""

"""The widgets: they show the view-models' state and forward what the user does."""
